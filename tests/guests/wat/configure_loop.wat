;; A hostile filter whose proxy_on_configure never returns. Loading it must
;; fail at its time budget, not hang the config load.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 1)))
