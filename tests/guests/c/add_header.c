// A tiny Proxy-Wasm filter in C (clang + wasi-libc): it copies the request's
// "x-from-client" header, if any, into the response as "x-c-filter", and adds
// "x-c-filter: hello" otherwise.
#include <stdlib.h>
#include <string.h>

#include "proxy_wasm.h"

EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t size) { return malloc(size); }

EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t id, uint32_t parent) {}

static char *from_client;
static size_t from_client_size;

EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t id, uint32_t headers, uint32_t end_of_stream) {
  static const char key[] = "x-from-client";
  proxy_get_header_map_value(MAP_REQUEST_HEADERS, key, sizeof key - 1, &from_client, &from_client_size);
  return ACTION_CONTINUE;
}

EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t id, uint32_t headers, uint32_t end_of_stream) {
  static const char key[] = "x-c-filter", hello[] = "hello";
  if (from_client != NULL) {
    proxy_add_header_map_value(MAP_RESPONSE_HEADERS, key, sizeof key - 1, from_client, from_client_size);
  } else {
    proxy_add_header_map_value(MAP_RESPONSE_HEADERS, key, sizeof key - 1, hello, sizeof hello - 1);
  }
  return ACTION_CONTINUE;
}
