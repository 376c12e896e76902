# ASan + UBSan for the whole build tree when ENJIN_SANITIZE is on (./enjin test --sanitize).
if(ENJIN_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()
