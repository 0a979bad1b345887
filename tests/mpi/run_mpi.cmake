# run_mpi.cmake - runs one MPI launch line with a time limit and checks how it
# ended. A hang becomes a failure after TIMEOUT seconds (the whole process
# tree is killed), instead of blocking the test run.
#
#   cmake -DEXPECT_EXIT=<code|nonzero> [-DEXPECT=<regex>;<regex>...]
#         [-DTIMEOUT=<seconds>] -P run_mpi.cmake -- <mpiexec> <arguments...>
#
# EXPECT_EXIT  the exit status the launcher must return (default 0), or
#              "nonzero" for any failure
# EXPECT       regular expressions that must each match the combined output
#              (for example one error line per process)
# TIMEOUT      seconds before the launch is killed (default 120)
if(NOT DEFINED EXPECT_EXIT)
  set(EXPECT_EXIT 0)
endif()
if(NOT DEFINED TIMEOUT)
  set(TIMEOUT 120)
endif()

set(_cmd "")
set(_after_dashes FALSE)
math(EXPR _last "${CMAKE_ARGC} - 1")
foreach(_i RANGE 1 ${_last})
  if(_after_dashes)
    list(APPEND _cmd "${CMAKE_ARGV${_i}}")
  elseif(CMAKE_ARGV${_i} STREQUAL "--")
    set(_after_dashes TRUE)
  endif()
endforeach()
if(NOT _cmd)
  message(FATAL_ERROR "run_mpi.cmake: no command after --")
endif()

string(REPLACE ";" " " _shown "${_cmd}")
message(STATUS "running: ${_shown}")
string(TIMESTAMP _t0 "%s")
execute_process(COMMAND ${_cmd}
  RESULT_VARIABLE _rc
  OUTPUT_VARIABLE _out
  ERROR_VARIABLE _out
  TIMEOUT ${TIMEOUT})
string(TIMESTAMP _t1 "%s")
math(EXPR _secs "${_t1} - ${_t0}")
message("${_out}")
message(STATUS "exit status: ${_rc} after about ${_secs} s")

if(NOT _rc MATCHES "^-?[0-9]+$")
  message(FATAL_ERROR "the launch did not finish: ${_rc} (limit ${TIMEOUT} s)")
endif()
if(EXPECT_EXIT STREQUAL "nonzero")
  if(_rc EQUAL 0)
    message(FATAL_ERROR "expected a failure, but the exit status is 0")
  endif()
elseif(NOT _rc EQUAL EXPECT_EXIT)
  message(FATAL_ERROR "expected exit status ${EXPECT_EXIT}, got ${_rc}")
endif()
foreach(_re IN LISTS EXPECT)
  if(NOT _out MATCHES "${_re}")
    message(FATAL_ERROR "the output does not match: ${_re}")
  endif()
endforeach()
