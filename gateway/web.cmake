# web.cmake - the web app crdtd serves at / (static.c; docs/web-client.md): the demo
# (gateway/client/js/demo/), the JavaScript client's modules (gateway/client/js/*.js) and
# crdt.wasm, staged flat into <build>/gateway/web, where build/gateway/crdtd finds them by
# itself, and installed into <datadir>/crdtd/web, where the installed crdtd finds them.
set(CRDTD_WEB_DIR ${CMAKE_CURRENT_BINARY_DIR}/web)
file(RELATIVE_PATH crdtd_web_rel ${CMAKE_INSTALL_FULL_BINDIR}
     ${CMAKE_INSTALL_FULL_DATADIR}/crdtd/web)
set_property(SOURCE static.c APPEND PROPERTY COMPILE_DEFINITIONS CRDTD_WEB_REL="${crdtd_web_rel}")

set(js ${CMAKE_CURRENT_SOURCE_DIR}/client/js)
file(GLOB crdtd_web_src CONFIGURE_DEPENDS ${js}/demo/*.html ${js}/demo/*.js ${js}/demo/*.css
     ${js}/demo/*.svg ${js}/demo/*.webmanifest ${js}/*.js)
list(FILTER crdtd_web_src EXCLUDE REGEX "/node-[^/]*\\.js$") # Node only
set(staged)
set(names)
foreach(f ${crdtd_web_src})
  get_filename_component(name ${f} NAME)
  add_custom_command(OUTPUT ${CRDTD_WEB_DIR}/${name}
                     COMMAND ${CMAKE_COMMAND} -E copy_if_different ${f} ${CRDTD_WEB_DIR}/${name}
                     DEPENDS ${f} VERBATIM)
  list(APPEND staged ${CRDTD_WEB_DIR}/${name})
  list(APPEND names "\"${name}\"")
endforeach()

# crdt.wasm, from crdt/wasm (its own project, its toolchain file) when Debian's WebAssembly
# toolchain is there (scripts/setup-debian.sh installs it); without it the app says what is missing
option(CRDTD_WEB_WASM "Build crdt.wasm for the web app crdtd serves (clang's wasm32 target, lld, wasi-libc)" ON)
set(have_wasm OFF)
if(CRDTD_WEB_WASM)
  find_program(CRDTD_WASM_CLANG NAMES clang-14 clang)
  find_program(CRDTD_WASM_LD NAMES wasm-ld wasm-ld-14)
  if(CRDTD_WASM_CLANG AND CRDTD_WASM_LD)
    execute_process(COMMAND ${CRDTD_WASM_CLANG} --target=wasm32-wasi -print-libgcc-file-name
                    OUTPUT_VARIABLE builtins OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    execute_process(COMMAND sh -c "echo '#include <stdlib.h>' | '${CRDTD_WASM_CLANG}' --target=wasm32-wasi -E -x c - >/dev/null 2>&1"
                    RESULT_VARIABLE hdr_rc)
    if(builtins AND EXISTS ${builtins} AND hdr_rc EQUAL 0)
      set(have_wasm ON)
    endif()
  endif()
  if(NOT have_wasm)
    message(STATUS "gateway: no WebAssembly toolchain (clang wasm32, lld, wasi-libc, "
                   "libclang-rt-14-dev-wasm32): the web app is staged without crdt.wasm")
  endif()
endif()
set(CRDTD_WEB_WASM_OPT "-Oz -flto" CACHE STRING "Optimisation flags of the crdt.wasm crdtd serves")
if(have_wasm)
  include(ExternalProject)
  ExternalProject_Add(crdtd_web_wasm
    SOURCE_DIR ${PROJECT_SOURCE_DIR}/crdt/wasm
    BINARY_DIR ${CMAKE_CURRENT_BINARY_DIR}/crdt-wasm
    CMAKE_ARGS -DCMAKE_TOOLCHAIN_FILE=${PROJECT_SOURCE_DIR}/crdt/wasm/wasm32-wasi.cmake
               -DCMAKE_BUILD_TYPE=Release -DCRDTD_WERROR=${CRDTD_WERROR}
               # what a page downloads: built for size (docs/benchmarks.md, "What a page loads")
               "-DCRDT_WASM_OPT=${CRDTD_WEB_WASM_OPT}"
    BUILD_ALWAYS ON
    INSTALL_COMMAND ${CMAKE_COMMAND} -E copy_if_different <BINARY_DIR>/crdt.wasm
                    ${CRDTD_WEB_DIR}/crdt.wasm
    USES_TERMINAL_BUILD OFF)
  list(APPEND names "\"crdt.wasm\"")
endif()

# what the service worker caches for offline loads (sw.js reads it at install)
list(JOIN names ", " names_json)
file(CONFIGURE OUTPUT ${CRDTD_WEB_DIR}/files.json CONTENT "[\"./\", ${names_json}]\n" @ONLY)

add_custom_target(crdtd_web ALL DEPENDS ${staged})
if(have_wasm)
  add_dependencies(crdtd_web crdtd_web_wasm)
endif()
add_dependencies(crdtd crdtd_web)
# the files staged by this build, by name (not the directory: it may hold files of older builds)
set(crdtd_web_install ${staged} ${CRDTD_WEB_DIR}/files.json)
if(have_wasm)
  list(APPEND crdtd_web_install ${CRDTD_WEB_DIR}/crdt.wasm)
endif()
install(FILES ${crdtd_web_install} DESTINATION ${CMAKE_INSTALL_DATADIR}/crdtd/web)
