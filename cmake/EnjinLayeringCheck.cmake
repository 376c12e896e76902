# The layering check, run as a build step by enjin_layering (cmake/EnjinLayering.cmake) and by
# the ctest layering_check:
#   cmake -DENJIN_ROOT=<source dir> -DENJIN_RULES=<rules.cmake> [-DENJIN_STAMP=<file>] -P this
# It reads the #include lines of every file under src/, include/enjin/ and the consumer
# directories, and fails, naming file, line and rule, on:
#   1. a library file (src/<S>/**, include/enjin/<S>/**) that includes enjin/<T>/... where T is
#      neither S nor below it: an upward or sideways include;
#   2. a file that includes a private header (src/<T>/**) of another subsystem, or a public
#      header (include/enjin/**) that includes any private header;
#   3. a file of tests/ or daemons/ that includes a private header: they see only include/;
#   4. a file under src/ or include/enjin/ outside every declared subsystem, or a source file
#      under src/<S>/ missing from S's SOURCES (it would silently not be built; checked where the
#      rules list SOURCES).
# Quoted includes are resolved the way the compiler does it, first next to the including file,
# then in include/, so "../supervise/x.hpp" counts as much as "enjin/supervise/x.hpp". Angle
# includes other than <enjin/...> are third-party and not checked. On success ENJIN_STAMP is
# touched, so the build step re-runs only when a scanned file changes.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS ENJIN_ROOT ENJIN_RULES)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "EnjinLayeringCheck: -D${var}=... is required")
  endif()
endforeach()
include(${ENJIN_RULES})
cmake_path(ABSOLUTE_PATH ENJIN_ROOT NORMALIZE OUTPUT_VARIABLE root)
string(REGEX REPLACE "/$" "" root "${root}")
# The root as a regex (a checkout in ~/c++/enjin is not a pattern).
string(REGEX REPLACE "([][+.*?()^$|\\])" "\\\\\\1" root_re "${root}")

set(violations "")
set(violation_count 0)
function(violation rel line)
  string(JOIN "" text ${ARGN})
  set(violations "${violations}${rel}:${line}: error: layering: ${text}\n" PARENT_SCOPE)
  math(EXPR count "${violation_count} + 1")
  set(violation_count ${count} PARENT_SCOPE)
endfunction()

# Sets ${out} to the subsystem and kind (src or include) of an absolute path, or "" if it is in
# neither tree: "<kind>;<subsystem or empty>".
function(classify path out)
  if(path MATCHES "^${root_re}/src/([^/]+)/")
    set(${out} "src;${CMAKE_MATCH_1}" PARENT_SCOPE)
  elseif(path MATCHES "^${root_re}/src/")
    set(${out} "src;" PARENT_SCOPE)
  elseif(path MATCHES "^${root_re}/include/enjin/([^/]+)/")
    set(${out} "include;${CMAKE_MATCH_1}" PARENT_SCOPE)
  elseif(path MATCHES "^${root_re}/include/")
    set(${out} "include;" PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

function(join_comma list out)
  string(REPLACE ";" ", " joined "${list}")
  if(joined STREQUAL "")
    set(joined "nothing")
  endif()
  set(${out} "${joined}" PARENT_SCOPE)
endfunction()

# The #include lines of `file`, in the caller's scope: inc_count, and for n in 1..inc_count
# inc_<n>_line, inc_<n>_text ("path" or <path>) and inc_<n>_target (the absolute path it
# resolves to, "" for a third-party header).
function(read_includes file)
  file(READ ${file} content)
  get_filename_component(dir ${file} DIRECTORY)
  string(REGEX MATCHALL "(^|\n)[ \t]*#[ \t]*include[ \t]*[<\"][^>\"\n]+[>\"]" matches "${content}")
  set(rest "${content}")
  set(line 1)
  set(n 0)
  foreach(m IN LISTS matches)
    string(FIND "${rest}" "${m}" pos)
    string(SUBSTRING "${rest}" 0 ${pos} before)
    string(REGEX MATCHALL "\n" nl "${before}${m}")
    list(LENGTH nl count)
    math(EXPR line "${line} + ${count}")
    string(LENGTH "${m}" mlen)
    math(EXPR after "${pos} + ${mlen}")
    string(SUBSTRING "${rest}" ${after} -1 rest)

    string(REGEX MATCH "([<\"])([^>\"\n]+)[>\"]$" _ "${m}")
    set(text "${CMAKE_MATCH_0}")
    set(delim "${CMAKE_MATCH_1}")
    set(path "${CMAKE_MATCH_2}")
    set(target "")
    if(delim STREQUAL "\"")
      cmake_path(ABSOLUTE_PATH path BASE_DIRECTORY ${dir} NORMALIZE OUTPUT_VARIABLE next_to)
      if(EXISTS ${next_to})
        set(target ${next_to})
      endif()
    endif()
    if(target STREQUAL "" AND (path MATCHES "^enjin/" OR EXISTS ${root}/include/${path}))
      cmake_path(ABSOLUTE_PATH path BASE_DIRECTORY ${root}/include NORMALIZE
                 OUTPUT_VARIABLE target)
    endif()
    math(EXPR n "${n} + 1")
    set(inc_${n}_line ${line} PARENT_SCOPE)
    set(inc_${n}_text "${text}" PARENT_SCOPE)
    set(inc_${n}_target "${target}" PARENT_SCOPE)
  endforeach()
  set(inc_count ${n} PARENT_SCOPE)
endfunction()

# Library files: rules 1, 2 and 4.
set(globs)
foreach(ext IN ITEMS c cc cpp h hpp)
  list(APPEND globs ${root}/src/*.${ext} ${root}/include/enjin/*.${ext})
endforeach()
file(GLOB_RECURSE library_files ${globs})
list(SORT library_files)
foreach(file IN LISTS library_files)
  file(RELATIVE_PATH rel ${root} ${file})
  classify(${file} where)
  list(GET where 0 kind)
  list(GET where 1 sub)
  if(sub STREQUAL "" OR NOT sub IN_LIST ENJIN_LAYER_SUBSYSTEMS)
    join_comma("${ENJIN_LAYER_SUBSYSTEMS}" known)
    violation(${rel} 1 "not in a declared subsystem (${known}): library files live in "
                       "src/<subsystem>/ or include/enjin/<subsystem>/, and a new subsystem is "
                       "declared with enjin_subsystem() in src/CMakeLists.txt")
    continue()
  endif()
  if(kind STREQUAL "src" AND DEFINED ENJIN_LAYER_SOURCES_${sub} AND rel MATCHES "\\.(c|cc|cpp)$")
    string(LENGTH "src/${sub}/" skip)
    string(SUBSTRING "${rel}" ${skip} -1 in_sub)
    if(NOT in_sub IN_LIST ENJIN_LAYER_SOURCES_${sub})
      violation(${rel} 1 "not in the SOURCES of subsystem '${sub}', so it is not built: add it "
                         "to enjin_subsystem(NAME ${sub} ...) in src/CMakeLists.txt")
    endif()
  endif()
  set(allowed ${ENJIN_LAYER_ALLOWED_${sub}})
  read_includes(${file})
  if(inc_count EQUAL 0)
    continue()  # (foreach RANGE 1 0 would count down)
  endif()
  foreach(i RANGE 1 ${inc_count})
    if(inc_${i}_target STREQUAL "")
      continue()  # third-party
    endif()
    set(line ${inc_${i}_line})
    set(shown "#include ${inc_${i}_text}")
    classify(${inc_${i}_target} to)
    if(to STREQUAL "")
      file(RELATIVE_PATH trel ${root} ${inc_${i}_target})
      if(NOT trel MATCHES "^\\.\\./")
        violation(${rel} ${line} "${shown}: library code includes ${trel}, outside src/ and "
                                 "include/")
      endif()
      continue()
    endif()
    list(GET to 0 tkind)
    list(GET to 1 tsub)
    file(RELATIVE_PATH trel ${root} ${inc_${i}_target})
    if(tkind STREQUAL "src")
      if(kind STREQUAL "include")
        violation(${rel} ${line} "${shown}: public header includes the private header ${trel}: "
                                 "headers under include/ may include only headers under include/")
      elseif(NOT tsub STREQUAL sub)
        violation(${rel} ${line} "${shown}: ${trel} is private to subsystem '${tsub}': only "
                                 "src/${tsub}/ may include it (move it to include/enjin/${tsub}/ "
                                 "if '${sub}' may use it)")
      endif()
    elseif(NOT tsub IN_LIST allowed)
      join_comma("${allowed}" may)
      join_comma("${ENJIN_LAYER_DEPENDS_${sub}}" deps)
      violation(${rel} ${line} "${shown}: subsystem '${sub}' may include enjin/<${may}>/ only, "
                               "and '${tsub}' is not below it (src/CMakeLists.txt: ${sub} "
                               "DEPENDS ${deps})")
    endif()
  endforeach()
endforeach()

# Consumers (tests/, daemons/): rule 3.
foreach(consumer IN LISTS ENJIN_LAYER_CONSUMERS)
  set(globs)
  foreach(ext IN ITEMS c cc cpp h hpp)
    list(APPEND globs ${root}/${consumer}/*.${ext})
  endforeach()
  file(GLOB_RECURSE consumer_files ${globs})
  list(SORT consumer_files)
  foreach(file IN LISTS consumer_files)
    file(RELATIVE_PATH rel ${root} ${file})
    read_includes(${file})
    if(inc_count EQUAL 0)
      continue()
    endif()
    foreach(i RANGE 1 ${inc_count})
      if(inc_${i}_target STREQUAL "")
        continue()
      endif()
      classify(${inc_${i}_target} to)
      if(to MATCHES "^src;")
        list(GET to 1 tsub)
        file(RELATIVE_PATH trel ${root} ${inc_${i}_target})
        violation(${rel} ${inc_${i}_line}
                  "#include ${inc_${i}_text}: ${trel} is private to subsystem '${tsub}': "
                  "${consumer}/ may use only the public headers (move it to "
                  "include/enjin/${tsub}/)")
      endif()
    endforeach()
  endforeach()
endforeach()

if(violation_count GREATER 0)
  # Plain lines in the compiler's "file:line: error:" form, so editors can jump to them.
  message(NOTICE "${violations}")
  if(DEFINED ENJIN_STAMP)
    file(REMOVE ${ENJIN_STAMP})  # so the next build checks again, whatever the timestamps say
  endif()
  message(FATAL_ERROR "${violation_count} layering violation(s) (see above). The layering is "
                      "declared in src/CMakeLists.txt and described in docs/architecture.md.")
endif()
if(DEFINED ENJIN_STAMP)
  file(TOUCH ${ENJIN_STAMP})
endif()
