"""De-identification of DICOM headers for the case library (DICOM PS3.15 Annex E, Basic Profile).

What :func:`deidentify_dataset` does, recursively in every sequence item:

* **Names**: every Person Name (PN) element is emptied (the patient's name becomes the pseudonym).
* **IDs and free text** of the Basic Profile (patient ID and other IDs, accession number, study ID,
  institution name/address/department, station name, device serial number, physicians, operators, addresses,
  telephone numbers, comments, descriptions, protocol and request attributes, ...): patient ID replaced by the
  pseudonym, the others emptied (Type 2 kept present) or removed.
* **Dates and times** (every DA, DT and TM element, birth date included) are emptied; Patient's Age removed.
* **UIDs**: every UI element that identifies an instance (study, series, SOP instance, frame of reference,
  referenced instances, ...) is replaced by a new UID through ``uid_map`` -- the same old UID always gives the
  same new UID, so references between files (RTSTRUCT -> CT slices) stay consistent. Class UIDs (SOP Class,
  Transfer Syntax, coding schemes, ...) are well-known constants and kept.
* **Private elements** and overlays/curves are removed.
* ``PatientIdentityRemoved = YES`` and ``DeidentificationMethod(CodeSequence)`` = Basic Application
  Confidentiality Profile (DCM 113100) are set.

:func:`scrub_metadata` does the same for the free-form ``meta`` dict of an :class:`~cervixtl.image.Image`
before it is stored (file paths and descriptions dropped, UIDs mapped).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

#: Keywords of Basic Profile attributes that are not PN/DA/TM/DT/UI but identify the patient, the visit or
#: the site. They are emptied when present (or removed, see :data:`REMOVE_KEYWORDS`).
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "PatientReligiousPreference", "PregnancyStatus", "SmokingStatus", "PatientSize",
    "PatientWeight", "PatientAge", "PatientSex", "PatientBirthTime", "PatientSexNeutered", "ResponsiblePerson",
    "ResponsibleOrganization", "CountryOfResidence", "RegionOfResidence", "PatientState",
    "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "StationName", "DeviceSerialNumber", "DeviceUID", "PlateID", "CassetteID",
    "DetectorID", "GantryID", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "OperatorIdentificationSequence", "RequestingService", "RequestAttributesSequence",
    "RequestedProcedureID", "RequestedProcedureDescription", "ScheduledProcedureStepID",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "PerformedLocation",
    "PerformedStationName", "PerformedStationAETitle", "ScheduledStationName", "ScheduledStationAETitle",
    "AdmissionID", "IssuerOfAdmissionID", "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence",
    "ServiceEpisodeID", "ServiceEpisodeDescription", "VisitComments", "CurrentPatientLocation",
    "PatientInstitutionResidence", "StudyDescription", "SeriesDescription", "ProtocolName",
    "ImageComments", "StudyComments", "InterpretationText", "DerivationDescription",
    "ContentCreatorName", "ContentCreatorIdentificationCodeSequence", "TextString", "TextValue",
    "PersonName", "PersonAddress", "PersonTelephoneNumbers", "OrderEnteredBy", "OrderEntererLocation",
    "OrderCallbackPhoneNumber", "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "ReasonForStudy", "ReasonForTheRequestedProcedure", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferencedPatientAliasSequence", "ModifiedAttributesSequence",
    "OriginalAttributesSequence", "DigitalSignaturesSequence", "AcquisitionDeviceProcessingDescription",
    "RTPlanName", "RTPlanDescription", "StructureSetName", "StructureSetDescription",
    "ROIObservationDescription", "ROIDescription", "ReviewerName", "ROIInterpreter",
    "CurrentPatientLocation", "InstitutionalDepartmentTypeCodeSequence", "DataSetTrailingPadding",
)

#: Of the above, those removed outright rather than emptied (Type 3 in every IOD CervixTL writes).
REMOVE_KEYWORDS: frozenset[str] = frozenset({
    "PatientAge", "PatientBirthTime", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator", "EthnicGroup", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "InstitutionAddress", "DeviceSerialNumber",
    "RequestAttributesSequence", "ReferencedPatientSequence", "ReferencedStudySequence",
    "OriginalAttributesSequence", "ModifiedAttributesSequence", "DigitalSignaturesSequence",
    "ImageComments", "StudyComments", "DataSetTrailingPadding", "PatientBirthName", "PatientMotherBirthName",
})

#: UI elements that hold well-known class / scheme UIDs, not instance identifiers: kept.
CLASS_UID_KEYWORDS: frozenset[str] = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID",
    "ReferencedSOPClassUIDInFile", "AffectedSOPClassUID", "RequestedSOPClassUID", "SOPClassesInStudy",
    "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID", "PrivateInformationCreatorUID",
    "ReferencedTransferSyntaxUIDInFile", "ContextUID",
})

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})

PSEUDONYM_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _new_uid(old: str, uid_map: MutableMapping[str, str]) -> str:
    from pydicom.uid import generate_uid

    if not old:
        return old
    if old not in uid_map:
        uid_map[old] = str(generate_uid())
    return uid_map[old]


def _map_uid_value(value: Any, uid_map: MutableMapping[str, str]) -> Any:
    if value is None or value == "":
        return value
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        return [_new_uid(str(v), uid_map) for v in value]
    return _new_uid(str(value), uid_map)


def _scrub(ds: Any, uid_map: MutableMapping[str, str]) -> None:
    """Apply the profile to one dataset level and recurse into sequences."""
    ds.remove_private_tags()
    to_delete = []
    for elem in list(ds):
        tag = elem.tag
        kw = elem.keyword
        group = tag.group
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            to_delete.append(tag)  # overlays and curves may carry burnt-in text
            continue
        if kw in REMOVE_KEYWORDS:
            to_delete.append(tag)
            continue
        if elem.VR == "SQ":
            if kw in IDENTIFYING_KEYWORDS:
                elem.value = []
                continue
            for item in elem.value:
                _scrub(item, uid_map)
            continue
        if elem.VR == "PN" or elem.VR in ("DA", "DT", "TM"):
            elem.value = ""
            continue
        if elem.VR == "UI":
            if kw not in CLASS_UID_KEYWORDS:
                elem.value = _map_uid_value(elem.value, uid_map)
            continue
        if kw in IDENTIFYING_KEYWORDS:
            elem.value = "" if elem.VR in _TEXT_VRS else None
            continue
        if kw == "" and elem.VR in ("LO", "SH", "LT", "ST", "UT", "UN", "UC"):
            to_delete.append(tag)  # unknown public text elements: cannot vouch for them
            continue
    for tag in to_delete:
        del ds[tag]


def deidentify_dataset(ds: Any, uid_map: MutableMapping[str, str], *, pseudonym: str = "ANONYMOUS") -> Any:
    """De-identify a pydicom Dataset **in place** (PS3.15 Basic Profile) and return it.

    Args:
        ds: a pydicom ``Dataset`` / ``FileDataset`` (its ``file_meta`` SOP Instance UID is mapped too).
        uid_map: old UID -> new UID; filled as new UIDs are made. Pass the same dict for every file of a case
            so that references between them stay consistent (and store it nowhere, or only encrypted: it
            re-identifies).
        pseudonym: the new Patient's Name and Patient ID (letters, digits, ``_`` and ``-``; e.g. a case id).

    Raises:
        BadInput: ``pseudonym`` is not a plain identifier.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSeq

    from ..errors import BadInput

    if not PSEUDONYM_RE.match(pseudonym):
        raise BadInput(f"pseudonym {pseudonym!r} must be 1-64 letters, digits, '_' or '-'")
    _scrub(ds, uid_map)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = _new_uid(str(meta.MediaStorageSOPInstanceUID), uid_map)
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "CervixTL: DICOM PS3.15 Basic Application Confidentiality Profile"
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = DSeq([code])
    return ds


def deidentify_file(src: str, dest: str, uid_map: MutableMapping[str, str], *, pseudonym: str = "ANONYMOUS") -> None:
    """Read a DICOM file, de-identify it (:func:`deidentify_dataset`) and write it atomically to ``dest``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from ..atomic import atomic_path
    from ..errors import BadInput

    try:
        ds = pydicom.dcmread(src)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise BadInput(f"{src}: not a readable DICOM file ({str(exc).splitlines()[0][:120]})") from None
    deidentify_dataset(ds, uid_map, pseudonym=pseudonym)
    with atomic_path(dest) as tmp:
        ds.save_as(tmp)


#: Keys of an Image/Segmentation ``meta`` dict that may carry identifying text and are dropped.
_META_DROP = ("files", "series_description", "study_description", "patient", "patient_name", "patient_id",
              "institution", "accession", "source_path", "path", "study_date", "series_date")


def scrub_metadata(meta: dict[str, Any], uid_map: MutableMapping[str, str]) -> dict[str, Any]:
    """A copy of an :class:`~cervixtl.image.Image` ``meta`` dict safe to store in a case: file paths,
    descriptions, names, dates dropped; values of keys ending in ``uid`` mapped through ``uid_map``; only
    plain JSON scalars kept."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        kl = k.lower()
        if any(kl == d or kl.startswith(d) for d in _META_DROP) or "name" in kl or "date" in kl:
            continue
        if kl.endswith("uid") and isinstance(v, str):
            out[k] = _new_uid(v, uid_map) if v else v
        elif isinstance(v, (int, float, bool)) or v is None or isinstance(v, str) and kl in ("modality", "source_format", "series_choice"):
            out[k] = v
    return out


def identifying_values(ds: Any) -> list[tuple[str, str]]:
    """(keyword, value) of every non-empty PN, DA/DT/TM, or :data:`IDENTIFYING_KEYWORDS` element left in
    ``ds`` (recursively), apart from the pseudonym fields: an audit helper for tests and logs."""
    found: list[tuple[str, str]] = []
    for elem in ds.iterall():
        kw = elem.keyword
        if kw in ("PatientName", "PatientID", "PatientIdentityRemoved", "DeidentificationMethod"):
            continue
        if elem.VR in ("SQ", "UI"):
            continue
        if (elem.VR in ("PN", "DA", "DT", "TM") or kw in IDENTIFYING_KEYWORDS) and elem.value not in ("", None, []):
            found.append((kw or str(elem.tag), str(elem.value)))
    return found
