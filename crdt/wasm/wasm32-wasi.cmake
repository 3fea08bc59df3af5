# wasm32-wasi.cmake - CMake toolchain for libcrdt in WebAssembly with Debian's own packages:
# clang's wasm32 target, lld (wasm-ld), wasi-libc and libclang-rt-14-dev-wasm32 (builtins).
# Used by crdt/wasm/CMakeLists.txt through scripts/build-wasm.sh; nothing is downloaded.
# "Generic": CMake has no platform file for WASI (it would warn); the triple says what it is.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_VERSION 1)
set(CMAKE_SYSTEM_PROCESSOR wasm32)
set(triple wasm32-wasi)

find_program(CRDT_WASM_CLANG NAMES clang-14 clang REQUIRED)
set(CMAKE_C_COMPILER ${CRDT_WASM_CLANG})
set(CMAKE_C_COMPILER_TARGET ${triple})
# Debian's wasi-libc: headers in /usr/include/wasm32-wasi, libraries in /usr/lib/wasm32-wasi,
# which Debian's clang searches for this triple by itself; CRDT_WASI_SYSROOT overrides.
set(CRDT_WASI_SYSROOT "" CACHE PATH "a wasi-libc sysroot other than Debian's layout")
if(CRDT_WASI_SYSROOT)
  set(CMAKE_SYSROOT ${CRDT_WASI_SYSROOT})
endif()
# The compiler checks link a program: a reactor needs no main.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CRDT_WASM_TOOLCHAIN ON)
