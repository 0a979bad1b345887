# check_consumer.cmake - builds and runs tests/consumer against lora_rite.
# Run by ctest (tests test_install and test_add_subdirectory) as
#   cmake -DMODE=install|subdirectory -DWORK_DIR=... -DSOURCE_DIR=... -DBUILD_DIR=...
#         -DCONSUMER_DIR=... -DC_COMPILER=... -DGENERATOR=... -DCONFIG=...
#         -DVERSION=... -DPKGCONFIGDIR=... -DINCLUDEDIR=... -DPKG_CONFIG=... -P check_consumer.cmake
#
# install:      cmake --install BUILD_DIR into WORK_DIR/prefix; build the
#               consumer with find_package(lora_rite) against that prefix and
#               run it; then compile consumer/main.c with the flags of
#               `pkg-config --cflags --libs lora_rite` and run that too.
# subdirectory: build the consumer with add_subdirectory(SOURCE_DIR) and run it.

foreach(var MODE WORK_DIR SOURCE_DIR BUILD_DIR CONSUMER_DIR C_COMPILER GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_consumer.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

# run(<what> COMMAND ...): run a command, echo it, stop on failure
function(run what)
  list(JOIN ARGN " " shown)
  message(STATUS "${what}: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()

# the consumer executable of a build directory (single- or multi-config)
function(consumer_exe dir out)
  foreach(candidate "${dir}/consumer" "${dir}/consumer.exe"
                    "${dir}/${CONFIG}/consumer" "${dir}/${CONFIG}/consumer.exe")
    if(EXISTS "${candidate}" AND NOT IS_DIRECTORY "${candidate}")
      set(${out} "${candidate}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "no consumer executable in ${dir}")
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(configure_args -G "${GENERATOR}" "-DCMAKE_C_COMPILER=${C_COMPILER}" "-DCMAKE_BUILD_TYPE=${CONFIG}")

if(MODE STREQUAL "install")
  set(prefix "${WORK_DIR}/prefix")
  run("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}" --config "${CONFIG}")
  foreach(f "${INCLUDEDIR}/lora_rite.h" "${INCLUDEDIR}/lora_rite_io.h" "${PKGCONFIGDIR}/lora_rite.pc")
    if(NOT EXISTS "${prefix}/${f}")
      message(FATAL_ERROR "cmake --install did not install ${f}")
    endif()
  endforeach()

  # 1. CMake: find_package(lora_rite) through CMAKE_PREFIX_PATH
  set(build "${WORK_DIR}/consumer-cmake")
  run("configure consumer" "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${build}" ${configure_args}
      "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  file(STRINGS "${build}/CMakeCache.txt" found REGEX "^lora_rite_DIR:")
  string(FIND "${found}" "${prefix}/" at)
  if(NOT at GREATER -1)
    message(FATAL_ERROR "the consumer found lora_rite outside the test prefix: ${found}")
  endif()
  run("build consumer" "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")
  consumer_exe("${build}" exe)
  run("run consumer (CMake)" "${exe}")

  # 2. pkg-config
  if(NOT PKG_CONFIG)
    message(FATAL_ERROR "pkg-config was not found when the project was configured")
  endif()
  set(env "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${prefix}/${PKGCONFIGDIR}")
  execute_process(COMMAND ${env} "${PKG_CONFIG}" --modversion lora_rite
                  RESULT_VARIABLE rc OUTPUT_VARIABLE version ERROR_VARIABLE err
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR NOT version STREQUAL "${VERSION}")
    message(FATAL_ERROR "pkg-config --modversion lora_rite gave '${version}' (${rc}), want ${VERSION}\n${err}")
  endif()
  execute_process(COMMAND ${env} "${PKG_CONFIG}" --cflags --libs lora_rite
                  RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config --cflags --libs lora_rite failed:\n${err}")
  endif()
  message(STATUS "pkg-config --cflags --libs lora_rite: ${flags}")
  separate_arguments(flags UNIX_COMMAND "${flags}")
  set(exe "${WORK_DIR}/consumer-pkgconfig")
  run("compile with pkg-config flags" "${C_COMPILER}" "${CONSUMER_DIR}/main.c" ${flags} -o "${exe}")
  run("run consumer (pkg-config)" "${exe}")

elseif(MODE STREQUAL "subdirectory")
  set(build "${WORK_DIR}/consumer-subdirectory")
  run("configure consumer" "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${build}" ${configure_args}
      "-DLORA_RITE_SOURCE_DIR=${SOURCE_DIR}")
  run("build consumer" "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")
  consumer_exe("${build}" exe)
  run("run consumer (add_subdirectory)" "${exe}")

else()
  message(FATAL_ERROR "check_consumer.cmake: MODE must be install or subdirectory")
endif()
