# Finds TensorRT's public headers (the plugin needs nothing else: it links no TensorRT library).
# Looks in TensorRT_ROOT (CMake or environment variable), then the usual system places, JetPack's
# /usr/include/aarch64-linux-gnu among them. Sets TensorRT_INCLUDE_DIR, TensorRT_VERSION,
# TensorRT_VERSION_MAJOR and MMAD_TRT_PLUGIN_ENABLED.
set(TensorRT_ROOT "" CACHE PATH "TensorRT installation (with include/NvInferRuntime.h)")
if(NOT TensorRT_ROOT AND DEFINED ENV{TensorRT_ROOT})
  set(TensorRT_ROOT "$ENV{TensorRT_ROOT}")
endif()

set(MMAD_TRT_PLUGIN_ENABLED OFF)
if(NOT MMAD_BUILD_TRT_PLUGIN STREQUAL "OFF")
  if(TensorRT_ROOT)
    # An explicit root is taken alone, so that a system TensorRT cannot shadow the one asked for.
    find_path(TensorRT_INCLUDE_DIR NvInferRuntime.h
      PATHS "${TensorRT_ROOT}" PATH_SUFFIXES include NO_DEFAULT_PATH)
  else()
    find_path(TensorRT_INCLUDE_DIR NvInferRuntime.h
      PATHS /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu /usr/local/TensorRT/include
            /usr/local/tensorrt/include /opt/tensorrt/include /usr/include)
  endif()

  if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
    file(READ "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _trt_version_h)
    # 10.x writes the number after NV_TENSORRT_MAJOR; 10.9+ and 11.x after TRT_MAJOR_ENTERPRISE.
    foreach(_part MAJOR MINOR PATCH)
      string(REGEX MATCH "#define (NV_TENSORRT|TRT)_${_part}(_ENTERPRISE)? +([0-9]+)" _m "${_trt_version_h}")
      set(_trt_${_part} "${CMAKE_MATCH_3}")
    endforeach()
    set(TensorRT_VERSION "${_trt_MAJOR}.${_trt_MINOR}.${_trt_PATCH}")
    set(TensorRT_VERSION_MAJOR "${_trt_MAJOR}")
  endif()

  if(NOT TensorRT_INCLUDE_DIR)
    set(_trt_why "TensorRT headers (NvInferRuntime.h) not found; set TensorRT_ROOT")
  elseif(NOT _trt_MAJOR OR _trt_MAJOR LESS 10)
    set(_trt_why "TensorRT ${TensorRT_VERSION} at ${TensorRT_INCLUDE_DIR} is older than 10.0 (IPluginV3)")
  else()
    set(MMAD_TRT_PLUGIN_ENABLED ON)
  endif()
else()
  set(_trt_why "MMAD_BUILD_TRT_PLUGIN=OFF")
endif()

if(MMAD_TRT_PLUGIN_ENABLED)
  message(STATUS "mmad plugins: TensorRT ${TensorRT_VERSION} headers at ${TensorRT_INCLUDE_DIR}: building the SelectiveScan plugin")
elseif(MMAD_BUILD_TRT_PLUGIN STREQUAL "ON")
  message(FATAL_ERROR "mmad plugins: MMAD_BUILD_TRT_PLUGIN=ON but ${_trt_why}")
else()
  message(WARNING "mmad plugins: the SelectiveScan TensorRT plugin is SKIPPED (${_trt_why}). "
                  "The kernel library and the host harness are still built.")
endif()
