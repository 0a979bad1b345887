# lora_riteReadmeSnippet.cmake - keeps README.md's usage example honest.
#
# README.md shows the core of examples/quickstart.c in a ```c block between
#   <!-- snippet:usage -->   and   <!-- /snippet:usage -->
# and quickstart.c marks the same lines with
#   /* snippet:usage begin */   and   /* snippet:usage end */
#
#   cmake -DMODE=generate -DREADME=... -DQUICKSTART=... -DOUTPUT=file.c -P this
#     writes quickstart.c with the marked part replaced by README.md's code
#     (with #line directives, so a compiler error points into README.md)
#   cmake -DMODE=check -DREADME=... -DQUICKSTART=... -P this
#     fails unless both hold the same code (indentation and blank lines aside)

foreach(var MODE README QUICKSTART)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "lora_riteReadmeSnippet.cmake: ${var} is not set")
  endif()
endforeach()

# _rite_between(<text> <begin> <end> <out_before> <out_inside> <out_after>)
# splits text at the first line holding <begin> and the next line holding <end>:
# before ends with the begin line, after starts with the end line.
function(_rite_between text begin end out_before out_inside out_after)
  string(FIND "${text}" "${begin}" b)
  if(b EQUAL -1)
    message(FATAL_ERROR "marker '${begin}' not found")
  endif()
  string(SUBSTRING "${text}" ${b} -1 rest)
  string(FIND "${rest}" "\n" nl)
  if(nl EQUAL -1)
    message(FATAL_ERROR "nothing follows marker '${begin}'")
  endif()
  math(EXPR start "${b} + ${nl} + 1")
  string(SUBSTRING "${text}" 0 ${start} before)
  string(SUBSTRING "${text}" ${start} -1 rest)
  string(FIND "${rest}" "${end}" e)
  if(e EQUAL -1)
    message(FATAL_ERROR "marker '${end}' not found after '${begin}'")
  endif()
  string(SUBSTRING "${rest}" 0 ${e} inside)
  # the end marker's line starts after the last newline of inside
  string(FIND "${inside}" "\n" last REVERSE)
  if(last EQUAL -1)
    set(last 0)
  else()
    math(EXPR last "${last} + 1")
  endif()
  string(SUBSTRING "${rest}" ${last} -1 after)
  string(SUBSTRING "${inside}" 0 ${last} inside)
  set(${out_before} "${before}" PARENT_SCOPE)
  set(${out_inside} "${inside}" PARENT_SCOPE)
  set(${out_after} "${after}" PARENT_SCOPE)
endfunction()

# number of lines in text (its count of newlines)
function(_rite_count_lines text out)
  string(REGEX MATCHALL "\n" nls "${text}")
  list(LENGTH nls n)
  set(${out} ${n} PARENT_SCOPE)
endfunction()

# the code, with indentation, trailing blanks and empty lines removed
function(_rite_normalize text out)
  string(REGEX REPLACE "[ \t\r]*\n[ \t\r]*" "\n" text "\n${text}\n")
  string(REGEX REPLACE "\n+" "\n" text "${text}")
  string(STRIP "${text}" text)
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

file(READ "${README}" readme)
file(READ "${QUICKSTART}" quickstart)

# README: the ```c block inside the snippet markers
_rite_between("${readme}" "<!-- snippet:usage -->" "<!-- /snippet:usage -->"
              readme_before readme_block readme_after)
_rite_between("${readme_block}" "```c" "```" fence_before readme_code fence_after)
_rite_count_lines("${readme_before}${fence_before}" readme_line)
math(EXPR readme_line "${readme_line} + 1")

_rite_between("${quickstart}" "/* snippet:usage begin */" "/* snippet:usage end */"
              quick_before quick_code quick_after)
_rite_count_lines("${quick_before}${quick_code}" quick_line)
math(EXPR quick_line "${quick_line} + 1")

if(MODE STREQUAL "generate")
  if(NOT DEFINED OUTPUT)
    message(FATAL_ERROR "lora_riteReadmeSnippet.cmake: OUTPUT is not set")
  endif()
  set(code "/* Generated from ${QUICKSTART} and ${README}; do not edit. */\n")
  string(APPEND code "#line 1 \"${QUICKSTART}\"\n" "${quick_before}")
  string(APPEND code "#line ${readme_line} \"${README}\"\n" "${readme_code}")
  string(APPEND code "#line ${quick_line} \"${QUICKSTART}\"\n" "${quick_after}")
  # rewrite only on change, so an unchanged README triggers no rebuild
  set(old "")
  if(EXISTS "${OUTPUT}")
    file(READ "${OUTPUT}" old)
  endif()
  if(NOT old STREQUAL code)
    file(WRITE "${OUTPUT}" "${code}")
  endif()
elseif(MODE STREQUAL "check")
  _rite_normalize("${readme_code}" a)
  _rite_normalize("${quick_code}" b)
  if(NOT a STREQUAL b)
    message(FATAL_ERROR
      "README.md's usage example (line ${readme_line}) differs from the marked part of "
      "examples/quickstart.c; make them the same.\n"
      "--- README.md:\n${a}\n--- examples/quickstart.c:\n${b}\n")
  endif()
  message(STATUS "README.md's usage example matches examples/quickstart.c")
else()
  message(FATAL_ERROR "lora_riteReadmeSnippet.cmake: MODE must be generate or check")
endif()
