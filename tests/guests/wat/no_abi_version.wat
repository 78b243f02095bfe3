;; A module that is not a Proxy-Wasm filter: it exports memory and an
;; allocator but advertises no ABI version. Loading it must fail.
(module
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))
