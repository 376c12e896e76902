# Warnings are a per-target property: project targets get them, system headers do not.
function(enjin_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align)
endfunction()
