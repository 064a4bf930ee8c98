"""Training and fine-tuning of segmentation models (transfer learning from a source model).

One module per concern (as nnU-Net's trainer: a loop that calls one function per phase):

* :mod:`.config`: :class:`TrainConfig` (settings) and :class:`TrainResult`;
* :mod:`.data`: cases on the model grid (exactly inference's preprocessing), foreground-biased patches;
* :mod:`.augment`: nnU-Net's augmentation set from MONAI transforms, anatomy-safe left-right mirror;
* :mod:`.loss`: cross-entropy + Dice for sigmoid, softmax and softmax+sigmoid outputs, with structures a case
  did not contour left out of its loss;
* :mod:`.schedule`: warm-up then poly learning-rate decay, step budget of a wall-clock limit;
* :mod:`.validation`: production-pipeline validation Dice per structure, EMA checkpoint selection;
* :mod:`.loop`: :func:`train` = train_step / validation_step / on_epoch_end / checkpoints;
* :mod:`.freezing`: forward-order freezing, frozen normalisation statistics;
* :mod:`.distributed`: torchrun helpers (rank 0 decides);
* :mod:`.finetune`: cards of new models (from scratch, from a source, source organs + new sigmoid targets),
  :func:`finetune` (source, freezing, training, registry write).
"""

from ..splits import split_cases
from .augment import DEFAULT_AUGMENTATION, Augmenter, augment
from .config import DEFAULT_LABELS, UNKNOWN, TrainConfig, TrainResult
from .data import PreparedCase, foreground_masks, lr_swap_pairs, prepare_case, sample_batch, sample_patch
from .distributed import is_lead_process
from .finetune import (
                       SIZES,
                       card_summary,
                       check_labels_contoured,
                       default_card,
                       derive_card,
                       finetune,
                       model_spacing,
                       output_channel_map,
                       with_sigmoid_targets,
)
from .freezing import forward_order, freeze, freeze_norm_stats
from .loop import CHECKPOINT_FILE, load_checkpoint, save_checkpoint, train
from .loss import OutputGroups, SegLoss, make_loss, output_groups
from .schedule import lr_factor, steps_for_budget
from .validation import EmaSelector, validate

__all__ = ["TrainConfig", "TrainResult", "PreparedCase", "prepare_case", "sample_patch", "sample_batch", "augment",
           "Augmenter", "DEFAULT_AUGMENTATION", "lr_swap_pairs", "foreground_masks", "output_channel_map",
           "make_loss", "SegLoss", "OutputGroups", "output_groups", "validate", "EmaSelector", "train",
           "finetune", "default_card", "derive_card", "with_sigmoid_targets", "check_labels_contoured", "SIZES",
           "model_spacing", "split_cases", "card_summary", "is_lead_process", "DEFAULT_LABELS", "UNKNOWN", "forward_order",
           "freeze", "freeze_norm_stats", "lr_factor", "steps_for_budget", "CHECKPOINT_FILE", "save_checkpoint",
           "load_checkpoint"]
