# ctest layering_check: the layering checker (cmake/EnjinLayeringCheck.cmake) must fail on a
# small tree holding one violation of each rule, naming file and line, must pass once they are
# gone, and must pass on the real source tree.
#   cmake -DCHECKER=<checker> -DREAL_ROOT=<source dir> -DREAL_RULES=<build>/layering/rules.cmake
#         -DWORK_DIR=<scratch dir> -P check_test.cmake
cmake_minimum_required(VERSION 3.25)

set(root ${WORK_DIR}/fixture)
file(REMOVE_RECURSE ${root})

# base <- bus, base <- supervise, ring <- all three.
file(WRITE ${root}/rules.cmake [[
set(ENJIN_LAYER_SUBSYSTEMS "base;bus;supervise;ring")
set(ENJIN_LAYER_ALLOWED_base "base")
set(ENJIN_LAYER_DEPENDS_base "")
set(ENJIN_LAYER_ALLOWED_bus "bus;base")
set(ENJIN_LAYER_DEPENDS_bus "base")
set(ENJIN_LAYER_ALLOWED_supervise "supervise;base")
set(ENJIN_LAYER_DEPENDS_supervise "base")
set(ENJIN_LAYER_SOURCES_supervise "spawn/exec.cpp;observe.cpp;upward.cpp;sideways.cpp")
set(ENJIN_LAYER_ALLOWED_ring "ring;base;bus;supervise")
set(ENJIN_LAYER_DEPENDS_ring "base;bus;supervise")
set(ENJIN_LAYER_SOURCES_ring "tree.cpp;config.cpp")
set(ENJIN_LAYER_SOURCES_bus "")
set(ENJIN_LAYER_CONSUMERS "tests")
]])

# Allowed: own and lower public headers, own private headers, third-party and system headers,
# and an include in a comment.
file(WRITE ${root}/include/enjin/base/result.hpp "#pragma once\n#include <string>\n")
file(WRITE ${root}/include/enjin/bus/topic.hpp "#pragma once\n#include \"enjin/base/result.hpp\"\n")
file(WRITE ${root}/include/enjin/supervise/spec.hpp
     "#pragma once\n#include <enjin/base/result.hpp>\n#include \"../base/result.hpp\"\n")
file(WRITE ${root}/include/enjin/ring/tree.hpp
     "#pragma once\n#include \"enjin/bus/topic.hpp\"\n#include \"enjin/supervise/spec.hpp\"\n")
file(WRITE ${root}/src/supervise/spawn/core.hpp "#pragma once\n#include \"enjin/supervise/spec.hpp\"\n")
file(WRITE ${root}/src/supervise/spawn/exec.cpp
     "#include \"core.hpp\"\n#include <zmq.hpp>\n#include <sys/wait.h>\n#include \"zmq.hpp\"\n")
file(WRITE ${root}/src/supervise/observe.cpp
     "// Not #include \"enjin/ring/tree.hpp\": that would go up.\n"
     "#include \"spawn/core.hpp\"\n#include \"enjin/base/result.hpp\"\n")
file(WRITE ${root}/src/ring/tree.cpp "#include \"enjin/ring/tree.hpp\"\n\n#include \"enjin/bus/topic.hpp\"\n")
file(WRITE ${root}/tests/tree_test.cpp "#include \"enjin/ring/tree.hpp\"\n#include <gtest/gtest.h>\n")

set(passes 0)
set(failures "")
# expect(<what> <condition>...): the condition in if() syntax.
macro(expect what)
  if(${ARGN})
    math(EXPR passes "${passes} + 1")
  else()
    string(APPEND failures "  FAILED: ${what}\n")
  endif()
endmacro()

function(run_checker dir rules out_rc out_text)
  execute_process(COMMAND ${CMAKE_COMMAND} -DENJIN_ROOT=${dir} -DENJIN_RULES=${rules}
                          -DENJIN_STAMP=${WORK_DIR}/stamp -P ${CHECKER}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${out_rc} ${rc} PARENT_SCOPE)
  set(${out_text} "${out}${err}" PARENT_SCOPE)
endfunction()

# 1. The clean fixture passes and touches the stamp.
file(REMOVE ${WORK_DIR}/stamp)
run_checker(${root} ${root}/rules.cmake rc text)
expect("clean fixture passes (rc ${rc}):\n${text}" rc EQUAL 0)
expect("clean fixture touches the stamp" EXISTS ${WORK_DIR}/stamp)

# 2. One violation of each rule; each must be reported with its file and line.
file(WRITE ${root}/src/supervise/upward.cpp
     "#include \"enjin/supervise/spec.hpp\"\n\n#include \"enjin/ring/tree.hpp\"\n")
file(WRITE ${root}/src/supervise/sideways.cpp "#include <enjin/bus/topic.hpp>\n")
file(WRITE ${root}/include/enjin/base/up.hpp "#pragma once\n// why\n#include \"../bus/topic.hpp\"\n")
file(WRITE ${root}/include/enjin/supervise/leak.hpp
     "#pragma once\n#include \"../../../src/supervise/spawn/core.hpp\"\n")
file(WRITE ${root}/src/ring/config.cpp
     "#include \"enjin/ring/tree.hpp\"\n#include \"../supervise/spawn/core.hpp\"\n")
file(WRITE ${root}/tests/spawn_test.cpp
     "#include <gtest/gtest.h>\n#include \"../src/supervise/spawn/core.hpp\"\n")
file(WRITE ${root}/src/stray.cpp "int x;\n")
file(WRITE ${root}/src/newsub/thing.cpp "int y;\n")
file(WRITE ${root}/src/bus/unlisted.cpp "#include \"enjin/bus/topic.hpp\"\n")
file(REMOVE ${WORK_DIR}/stamp)
run_checker(${root} ${root}/rules.cmake rc text)
expect("violations fail the check" NOT rc EQUAL 0)
expect("a failed check leaves no stamp" NOT EXISTS ${WORK_DIR}/stamp)
foreach(needle IN ITEMS
    "src/supervise/upward.cpp:3: error: layering: #include \"enjin/ring/tree.hpp\": subsystem 'supervise'"
    "src/supervise/sideways.cpp:1: error: layering: #include <enjin/bus/topic.hpp>: subsystem 'supervise'"
    "include/enjin/base/up.hpp:3: error: layering: #include \"../bus/topic.hpp\": subsystem 'base'"
    "include/enjin/supervise/leak.hpp:2: error: layering: #include \"../../../src/supervise/spawn/core.hpp\": public header includes the private header"
    "src/ring/config.cpp:2: error: layering: #include \"../supervise/spawn/core.hpp\": src/supervise/spawn/core.hpp is private to subsystem 'supervise'"
    "tests/spawn_test.cpp:2: error: layering: #include \"../src/supervise/spawn/core.hpp\": src/supervise/spawn/core.hpp is private to subsystem 'supervise'"
    "src/stray.cpp:1: error: layering: not in a declared subsystem"
    "src/newsub/thing.cpp:1: error: layering: not in a declared subsystem"
    "src/bus/unlisted.cpp:1: error: layering: not in the SOURCES of subsystem 'bus'"
    "9 layering violation(s)")
  string(FIND "${text}" "${needle}" at)
  expect("the output names: ${needle}" NOT at EQUAL -1)
endforeach()
foreach(clean IN ITEMS exec.cpp observe.cpp tree.cpp tree_test.cpp result.hpp spec.hpp)
  string(FIND "${text}" "${clean}:" at)
  expect("no violation reported for the allowed ${clean}" at EQUAL -1)
endforeach()

# 3. The real tree passes.
run_checker(${REAL_ROOT} ${REAL_RULES} rc text)
expect("the source tree passes (rc ${rc}):\n${text}" rc EQUAL 0)

if(NOT failures STREQUAL "")
  message(FATAL_ERROR "layering_check:\n${failures}\nLast checker output:\n${text}")
endif()
message(STATUS "layering_check: ${passes} expectations met")
