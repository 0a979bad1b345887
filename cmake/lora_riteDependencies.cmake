# lora_riteDependencies.cmake - finds the libraries lora_rite.h calls (a CBLAS,
# LAPACKE, libm and, for the model's threads, POSIX threads) and gathers them in the imported target lora_rite::linalg.
#
# Included by the project's CMakeLists.txt and, after installation, by
# lora_riteConfig.cmake, so a build tree and an installed package find the
# same pieces the same way. Inputs:
#   BLA_VENDOR                    if set, passed to FindBLAS as is; otherwise
#                                 OpenBLAS is tried first, then any BLAS
#   LORA_RITE_LAPACKE_LIBRARY     cache: full path of liblapacke (found if unset)
#   LORA_RITE_LAPACKE_INCLUDE_DIR cache: directory of lapacke.h
#   LORA_RITE_CBLAS_INCLUDE_DIR   cache: directory of cblas.h
#   _lora_rite_deps_global        GLOBAL to make the imported target global
# Outputs:
#   lora_rite_DEPS_FOUND          TRUE when everything was found
#   lora_rite_DEPS_MESSAGE        what is missing otherwise

set(lora_rite_DEPS_FOUND TRUE)
set(lora_rite_DEPS_MESSAGE "")
if(TARGET lora_rite::linalg)
  return()
endif()

set(_lora_rite_missing "")

# --- BLAS (with the CBLAS interface) --------------------------------------
if(DEFINED BLA_VENDOR)
  find_package(BLAS QUIET)
  set(_lora_rite_blas_vendor "${BLA_VENDOR}")
else()
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS QUIET)
  set(_lora_rite_blas_vendor OpenBLAS)
  unset(BLA_VENDOR)
  if(NOT BLAS_FOUND)
    find_package(BLAS QUIET)
    set(_lora_rite_blas_vendor "generic")
  endif()
endif()
if(NOT BLAS_FOUND)
  list(APPEND _lora_rite_missing "BLAS (install OpenBLAS, e.g. Debian's libopenblas-dev)")
endif()

# pkg-config, when present, supplies search hints for the headers and LAPACKE.
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(_lora_rite_pc_lapacke QUIET lapacke)
  pkg_check_modules(_lora_rite_pc_openblas QUIET openblas)
endif()

# A BLAS other than OpenBLAS may keep the C interface in a library of its own.
set(_lora_rite_cblas_library "")
if(BLAS_FOUND AND NOT _lora_rite_blas_vendor STREQUAL "OpenBLAS")
  find_library(LORA_RITE_CBLAS_LIBRARY NAMES cblas)
  if(LORA_RITE_CBLAS_LIBRARY)
    set(_lora_rite_cblas_library "${LORA_RITE_CBLAS_LIBRARY}")
  endif()
endif()

find_path(LORA_RITE_CBLAS_INCLUDE_DIR cblas.h
  HINTS ${_lora_rite_pc_openblas_INCLUDE_DIRS}
  PATH_SUFFIXES openblas)
if(NOT LORA_RITE_CBLAS_INCLUDE_DIR)
  list(APPEND _lora_rite_missing "cblas.h")
endif()

# --- LAPACKE (CMake has no FindLAPACKE) -----------------------------------
find_path(LORA_RITE_LAPACKE_INCLUDE_DIR lapacke.h
  HINTS ${_lora_rite_pc_lapacke_INCLUDE_DIRS} ${LORA_RITE_CBLAS_INCLUDE_DIR}
  PATH_SUFFIXES lapacke openblas)
find_library(LORA_RITE_LAPACKE_LIBRARY NAMES lapacke
  HINTS ${_lora_rite_pc_lapacke_LIBRARY_DIRS})
set(_lora_rite_lapacke_library "${LORA_RITE_LAPACKE_LIBRARY}")
if(NOT LORA_RITE_LAPACKE_INCLUDE_DIR OR NOT LORA_RITE_LAPACKE_LIBRARY)
  # Some OpenBLAS builds carry LAPACKE inside libopenblas itself.
  if(LORA_RITE_LAPACKE_INCLUDE_DIR AND _lora_rite_blas_vendor STREQUAL "OpenBLAS")
    set(_lora_rite_lapacke_library "")
  else()
    list(APPEND _lora_rite_missing "LAPACKE (e.g. Debian's liblapacke-dev)")
  endif()
endif()

if(_lora_rite_missing)
  set(lora_rite_DEPS_FOUND FALSE)
  list(JOIN _lora_rite_missing ", " _lora_rite_missing_text)
  set(lora_rite_DEPS_MESSAGE "lora_rite needs a CBLAS and LAPACKE; not found: ${_lora_rite_missing_text}")
  return()
endif()

# --- the imported target ---------------------------------------------------
add_library(lora_rite::linalg INTERFACE IMPORTED ${_lora_rite_deps_global})
set(_lora_rite_libs ${_lora_rite_lapacke_library} ${_lora_rite_cblas_library} ${BLAS_LIBRARIES})
if(BLAS_LINKER_FLAGS)
  list(APPEND _lora_rite_libs ${BLAS_LINKER_FLAGS})
endif()
if(NOT WIN32)
  list(APPEND _lora_rite_libs m)
  # the model's built-in threads (POSIX threads)
  set(THREADS_PREFER_PTHREAD_FLAG ON)
  find_package(Threads QUIET)
  if(Threads_FOUND)
    list(APPEND _lora_rite_libs Threads::Threads)
  endif()
endif()
set_target_properties(lora_rite::linalg PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${LORA_RITE_LAPACKE_INCLUDE_DIR};${LORA_RITE_CBLAS_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES "${_lora_rite_libs}")
