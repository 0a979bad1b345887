# cmake -DFUZZER=<fuzz_rite> -DSEEDS=<fuzz/corpus> -DWORK_DIR=<dir> -DSECONDS=<n> [-DNAME=<name>] -P fuzz_smoke.cmake
#
# Runs the libFuzzer target for SECONDS on a fresh copy of the seed corpus in
# WORK_DIR (the source tree is only read), and fails if it finds an input
# that breaks the contract; that input is left in WORK_DIR/artifacts/.
# NAME (default fuzz_rite) names the target in the messages.
foreach(var FUZZER SEEDS WORK_DIR SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "fuzz_smoke.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED NAME)
  set(NAME fuzz_rite)
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/corpus" "${WORK_DIR}/artifacts")
file(GLOB _seeds LIST_DIRECTORIES false "${SEEDS}/*")
if(NOT _seeds)
  message(FATAL_ERROR "fuzz_smoke.cmake: no seed inputs in ${SEEDS}")
endif()
file(COPY ${_seeds} DESTINATION "${WORK_DIR}/corpus")

execute_process(
  COMMAND "${FUZZER}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          -print_final_stats=1 "-artifact_prefix=${WORK_DIR}/artifacts/" "${WORK_DIR}/corpus"
  WORKING_DIRECTORY "${WORK_DIR}"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  file(GLOB _found "${WORK_DIR}/artifacts/*")
  message(FATAL_ERROR "${NAME} stopped with ${_rc}: it found an input that breaks the contract "
                      "(${_found}). Replay it with: ${FUZZER} <input>")
endif()
message(STATUS "${NAME}: ${SECONDS} s without a contract violation")
