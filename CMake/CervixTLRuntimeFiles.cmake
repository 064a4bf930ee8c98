# cervixtl_runtime_files(<source dir> <build dir> <install dir or "">)
#
# The engine package (cervixtl/*.py), its dependency list (pyproject.toml, read by the first-use installer) and
# the extension-level run-time resources (Resources/: model catalogue, bundled demo model, terminology, ROI name
# mapping, JSON schemas) are copied into <build dir> -- the build tree's scripted-modules folder, so that a
# developer build and the factory's self-tests find the same files as an installed extension -- and, when
# <install dir> is given, installed there.
function(cervixtl_runtime_files source_dir build_dir install_dir)
  file(GLOB_RECURSE _engine RELATIVE ${source_dir} ${source_dir}/cervixtl/*.py)
  file(GLOB_RECURSE _resources RELATIVE ${source_dir} ${source_dir}/Resources/*)
  foreach(_file pyproject.toml ${_engine} ${_resources})
    get_filename_component(_subdir ${_file} DIRECTORY)
    configure_file(${source_dir}/${_file} ${build_dir}/${_file} COPYONLY)
    if(install_dir)
      install(FILES ${source_dir}/${_file} DESTINATION ${install_dir}/${_subdir} COMPONENT RuntimeLibraries)
    endif()
  endforeach()
endfunction()
