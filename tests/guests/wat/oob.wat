;; A hostile filter: in proxy_on_request_headers it calls host functions with
;; pointers and lengths outside its memory, wrapping past 2^32, and with bad
;; enum values, and records each status as one ASCII digit ('0' + status).
;; proxy_on_response_headers reports them in "x-oob-statuses". A correct
;; host answers INVALID_MEMORY_ACCESS (6) to the pointer abuse and
;; BAD_ARGUMENT (2) to the enums, and never crashes.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-oob-statuses")
  (data (i32.const 48) "host")
  (global $heap (mut i32) (i32.const 1024))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))

  ;; record stores status as the digit at 256+index.
  (func $record (param $index i32) (param $status i32)
    (i32.store8 (i32.add (i32.const 256) (local.get $index))
      (i32.add (i32.const 48) (local.get $status))))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; message far past the end of memory
    (call $record (i32.const 0) (call $log (i32.const 2) (i32.const 0xfffffff0) (i32.const 100)))
    ;; key pointer + size wrapping past 2^32
    (call $record (i32.const 1)
      (call $get (i32.const 0) (i32.const 0xffffffff) (i32.const 10) (i32.const 512) (i32.const 516)))
    ;; value runs off the end of memory
    (call $record (i32.const 2)
      (call $add (i32.const 0) (i32.const 48) (i32.const 4) (i32.const 0xffff00) (i32.const 0x1000)))
    ;; return slots outside memory
    (call $record (i32.const 3)
      (call $pairs (i32.const 0) (i32.const 0xfffffffc) (i32.const 0xfffffffc)))
    ;; return slot exactly at the end of memory
    (call $record (i32.const 4)
      (call $get (i32.const 0) (i32.const 48) (i32.const 4) (i32.const 65536) (i32.const 0)))
    ;; a serialized map whose size points past memory
    (call $record (i32.const 5) (call $set_pairs (i32.const 0) (i32.const 60000) (i32.const 0x10000)))
    ;; an unknown map type
    (call $record (i32.const 6)
      (call $add (i32.const 99) (i32.const 48) (i32.const 4) (i32.const 48) (i32.const 4)))
    ;; an unknown log level
    (call $record (i32.const 7) (call $log (i32.const 6) (i32.const 48) (i32.const 4)))
    ;; a property path out of bounds
    (call $record (i32.const 8) (call $prop (i32.const 0xfffffff0) (i32.const 64) (i32.const 512) (i32.const 516)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 16) (i32.const 14) (i32.const 256) (i32.const 9)))
    (i32.const 0)))
