;; A hostile filter: in proxy_on_request_headers it grows its memory a page at
;; a time until memory.grow fails at the host's limit, then stores one byte
;; past the end, which must trap.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (block $full
      (loop $grow
        (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $grow)))
    (i32.store8 (i32.mul (memory.size) (i32.const 65536)) (i32.const 1))
    (i32.const 0)))
