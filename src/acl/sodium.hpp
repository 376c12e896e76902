// Private to acl: libsodium must be initialised before any of its functions are used.
#pragma once

namespace enjin::acl::detail {

// sodium_init() once; idempotent and thread-safe. Aborts if libsodium cannot start.
void ensureSodium();

}  // namespace enjin::acl::detail
