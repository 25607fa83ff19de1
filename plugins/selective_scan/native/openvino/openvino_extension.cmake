# The OpenVINO extension, libmmad_openvino_extension.so: the SelectiveScan op for OpenVINO's ONNX and IR readers,
# running the C++ CPU kernel (native/cpu, compiled in again without OpenMP: the op spreads its work over
# OpenVINO's own threads, see selective_scan_op.cpp). Included by ../../CMakeLists.txt.
#
# Needs OpenVINO's CMake package, which the openvino wheel on PyPI ships (<site-packages>/openvino/cmake):
#   cmake -S plugins -B plugins/build -DOpenVINO_DIR=$(python -c \
#       "import openvino, pathlib; print(pathlib.Path(openvino.__file__).parent / 'cmake')")
# mmad.plugins.selective_scan.openvino_ext does this on first use, into its cache.

# AUTO builds the extension when OpenVINO's CMake package is found, ON requires it, OFF skips it.
set(MMAD_BUILD_OPENVINO_EXT AUTO CACHE STRING "Build the OpenVINO extension: AUTO, ON or OFF")
set_property(CACHE MMAD_BUILD_OPENVINO_EXT PROPERTY STRINGS AUTO ON OFF)

set(MMAD_OPENVINO_EXT_ENABLED OFF)
if(NOT MMAD_BUILD_OPENVINO_EXT STREQUAL "OFF")
  find_package(OpenVINO QUIET COMPONENTS Runtime ONNX)
  if(OpenVINO_FOUND)
    set(MMAD_OPENVINO_EXT_ENABLED ON)
    message(STATUS "mmad plugins: OpenVINO ${OpenVINO_VERSION} found, building the OpenVINO extension")
  elseif(MMAD_BUILD_OPENVINO_EXT STREQUAL "ON")
    message(FATAL_ERROR "mmad plugins: MMAD_BUILD_OPENVINO_EXT=ON but OpenVINO's CMake package (with its ONNX "
                        "frontend) was not found: pip install openvino, and set OpenVINO_DIR to "
                        "<site-packages>/openvino/cmake")
  else()
    message(STATUS "mmad plugins: the OpenVINO extension is SKIPPED (no OpenVINO CMake package: pip install openvino "
                   "and set OpenVINO_DIR to <site-packages>/openvino/cmake)")
  endif()
endif()

if(MMAD_OPENVINO_EXT_ENABLED)
  add_library(mmad_openvino_extension SHARED
    native/openvino/selective_scan_op.cpp native/openvino/extension.cpp native/cpu/selective_scan_cpu.cpp)
  target_link_libraries(mmad_openvino_extension PRIVATE openvino::runtime openvino::frontend::onnx)
  # ov::parallel_for (openvino/core/parallel.hpp) is TBB in OpenVINO's builds; its TBB package ships beside OpenVINO's.
  if(NOT TARGET TBB::tbb)
    find_package(TBB QUIET CONFIG PATHS "${OpenVINO_DIR}" NO_DEFAULT_PATH)
  endif()
  if(TARGET TBB::tbb)
    target_link_libraries(mmad_openvino_extension PRIVATE TBB::tbb)
  endif()
  # Only OpenVINO's extension entry point leaves the library: the kernel's C functions stay inside it, so they
  # cannot clash with libmmad_selective_scan_cpu.so loaded in the same process.
  set_target_properties(mmad_openvino_extension PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CXX_EXTENSIONS OFF
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  # The kernel's flags (see the CPU target) with -fopenmp-simd for -fopenmp: its `omp simd` loops still vectorise,
  # its `omp parallel` regions become one thread, and no OpenMP runtime is loaded into OpenVINO's process.
  target_compile_options(mmad_openvino_extension PRIVATE -O3 -march=native -ffast-math -fopenmp-simd)
  target_link_options(mmad_openvino_extension PRIVATE "LINKER:--no-undefined")
endif()
