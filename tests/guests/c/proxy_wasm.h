// Minimal Proxy-Wasm ABI declarations for C test filters: just what they use.
#ifndef SLUICE_TEST_PROXY_WASM_H
#define SLUICE_TEST_PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>

#define IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

enum { MAP_REQUEST_HEADERS = 0, MAP_RESPONSE_HEADERS = 2 };
enum { ACTION_CONTINUE = 0, ACTION_PAUSE = 1 };

IMPORT(proxy_add_header_map_value)
uint32_t proxy_add_header_map_value(uint32_t map, const char *key, size_t key_size,
                                    const char *value, size_t value_size);
IMPORT(proxy_get_header_map_value)
uint32_t proxy_get_header_map_value(uint32_t map, const char *key, size_t key_size,
                                    char **value, size_t *value_size);
IMPORT(proxy_log)
uint32_t proxy_log(uint32_t level, const char *msg, size_t size);

#endif
