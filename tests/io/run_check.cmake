# run_check.cmake - the checks of lora_rite_io.h's files by readers we did not
# write, as ctest runs them (tests/CMakeLists.txt):
#
#   cmake -DMODE=python -DSCRIPT=check_safetensors.py -DDIR=<io_writer's dir> -P run_check.cmake
#   cmake -DMODE=npm    -DPREFIX=<dir> -DPACKAGE=@huggingface/gguf -DVERSION=<x.y.z> -P run_check.cmake
#   cmake -DMODE=node   -DSCRIPT=check_gguf.mjs -DPREFIX=<dir> -DDIR=<io_writer's dir> -P run_check.cmake
#
# A missing interpreter or package is a failure, not a skip: ./run tests
# installs them (python3-numpy, nodejs, npm from Debian).
#   python  runs SCRIPT with the first python3 that imports numpy: the one
#           on PATH, then /usr/bin/python3 (Debian's, where python3-numpy
#           installs numpy even when another python3 comes first on PATH)
#   npm     installs PACKAGE@VERSION into PREFIX (npm install --prefix),
#           unless that version is there already
#   node    runs SCRIPT with node, PREFIX and DIR as arguments
foreach(var MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_check.cmake: -D${var}=... is required")
  endif()
endforeach()

if(MODE STREQUAL "python")
  set(_candidates "")
  find_program(_python3 NAMES python3)
  if(_python3)
    list(APPEND _candidates "${_python3}")
  endif()
  if(EXISTS /usr/bin/python3)
    list(APPEND _candidates /usr/bin/python3)
  endif()
  set(_python "")
  foreach(p IN LISTS _candidates)
    execute_process(COMMAND "${p}" -c "import json, struct, numpy"
                    RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
    if(_rc EQUAL 0)
      set(_python "${p}")
      break()
    endif()
  endforeach()
  if(NOT _python)
    message(FATAL_ERROR "io_check_safetensors needs python3 with numpy, and found none "
                        "(tried: ${_candidates}). On Debian: apt-get install python3-numpy "
                        "(./run tests installs it).")
  endif()
  message(STATUS "python: ${_python}")
  execute_process(COMMAND "${_python}" "${SCRIPT}" "${DIR}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "check_safetensors.py failed (${_rc})")
  endif()

elseif(MODE STREQUAL "npm")
  set(_installed "${PREFIX}/node_modules/${PACKAGE}/package.json")
  if(EXISTS "${_installed}")
    file(READ "${_installed}" _json)
    string(REGEX MATCH "\"version\"[ \t]*:[ \t]*\"([^\"]*)\"" _m "${_json}")
    if(CMAKE_MATCH_1 STREQUAL VERSION)
      message(STATUS "${PACKAGE}@${VERSION} is already in ${PREFIX}")
      return()
    endif()
  endif()
  find_program(_node NAMES node nodejs)
  find_program(_npm NAMES npm)
  if(NOT _node OR NOT _npm)
    set(_missing "")
    if(NOT _node)
      string(APPEND _missing " node")
    endif()
    if(NOT _npm)
      string(APPEND _missing " npm")
    endif()
    message(FATAL_ERROR "io_check_gguf needs Node.js and npm to install ${PACKAGE}; not found:${_missing}. "
                        "On Debian: apt-get install nodejs npm (./run tests installs them).")
  endif()
  file(MAKE_DIRECTORY "${PREFIX}")
  # a package.json of its own, so that npm does not look further up for one
  if(NOT EXISTS "${PREFIX}/package.json")
    file(WRITE "${PREFIX}/package.json" "{\"name\": \"lora-rite-io-check\", \"private\": true}\n")
  endif()
  execute_process(
    COMMAND "${_npm}" install --prefix "${PREFIX}" --no-audit --no-fund --ignore-scripts
            --no-update-notifier "${PACKAGE}@${VERSION}"
    RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0 OR NOT EXISTS "${_installed}")
    message(FATAL_ERROR "npm install ${PACKAGE}@${VERSION} into ${PREFIX} failed (${_rc})")
  endif()

elseif(MODE STREQUAL "node")
  find_program(_node NAMES node nodejs)
  if(NOT _node)
    message(FATAL_ERROR "io_check_gguf needs Node.js, and found none. "
                        "On Debian: apt-get install nodejs npm (./run tests installs them).")
  endif()
  execute_process(COMMAND "${_node}" --version OUTPUT_VARIABLE _v OUTPUT_STRIP_TRAILING_WHITESPACE)
  message(STATUS "node: ${_node} ${_v}")
  execute_process(COMMAND "${_node}" "${SCRIPT}" "${PREFIX}" "${DIR}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "check_gguf.mjs failed (${_rc})")
  endif()

else()
  message(FATAL_ERROR "run_check.cmake: unknown MODE ${MODE}")
endif()
