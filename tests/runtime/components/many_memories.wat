;; A processor component with four linear memories in two core modules (two each, which
;; the pooling allocator accepts). Every `process` call grows three of them by PAGES pages
;; each and returns `ok(batch-end)`; `initialize` and `shutdown` do nothing. Each memory
;; alone stays below a 32 MiB cap; together they pass it.
(component
  (core module $grower
    (memory $a 0)
    (memory $b 0)
    (func (export "grow") (param $pages i32)
      (drop (memory.grow $a (local.get $pages)))
      (drop (memory.grow $b (local.get $pages)))))
  (core instance $g (instantiate $grower))
  (core module $main
    (import "grower" "grow" (func $grow (param i32)))
    (memory (export "memory") 1)
    (memory $second 0)
    (global $bump (mut i32) (i32.const 1024))
    ;; A bump allocator for the arguments the host lowers into memory 0.
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32)
      (local.set $ptr (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $ptr) (local.get 3)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size 0) (i32.const 65536)))
        (then (drop (memory.grow 0 (i32.add (i32.shr_u (global.get $bump) (i32.const 16)) (i32.const 1))))))
      (local.get $ptr))
    ;; result<_, process-error> at 16: ok.
    (func (export "initialize") (param i32 i32 i32 i32 i32 i32) (result i32)
      (i32.const 16))
    ;; result<checkpoint-directive, process-error> at 32: ok (byte 32 = 0), batch-end
    ;; (the directive's case, at 40, = 1).
    (func (export "process") (param i32 i32 i32 i32 i32 i32 i64) (result i32)
      (drop (memory.grow $second (i32.const PAGES)))
      (call $grow (i32.const PAGES))
      (global.set $bump (i32.const 1024))
      (i32.const 32))
    (func (export "shutdown") (param i32 i32 i32 i32 i32))
    (data (i32.const 40) "\01"))
  (core instance $m (instantiate $main (with "grower" (instance $g))))

  (type $shard (record (field "stream-name" string) (field "shard-id" string)))
  (export $shard-info "shard-info" (type $shard))
  (type $rec (record
    (field "partition-key" string)
    (field "sequence-number" string)
    (field "sub-sequence-number" u64)
    (field "approximate-arrival-ms" s64)
    (field "explicit-hash-key" (option string))
    (field "data" (list u8))))
  (export $kinesis-record "kinesis-record" (type $rec))
  (type $b (record (field "records" (list $kinesis-record)) (field "millis-behind-latest" u64)))
  (export $batch "batch" (type $b))
  (type $p (record (field "sequence-number" string) (field "sub-sequence-number" u64)))
  (export $position "position" (type $p))
  (type $d (variant (case "none") (case "batch-end") (case "at" $position) (case "rewind" $position)))
  (export $directive "checkpoint-directive" (type $d))
  (type $e (variant (case "retry" string) (case "fatal" string)))
  (export $process-error "process-error" (type $e))
  (type $r (enum "shard-end" "lease-lost" "requested"))
  (export $reason "shutdown-reason" (type $r))

  (func $initialize
    (param "shard" $shard-info) (param "settings" (list (tuple string string)))
    (result (result (error $process-error)))
    (canon lift (core func $m "initialize") (memory (core memory $m "memory")) (realloc (core func $m "cabi_realloc"))))
  (export "initialize" (func $initialize))
  (func $process
    (param "shard" $shard-info) (param "batch" $batch)
    (result (result $directive (error $process-error)))
    (canon lift (core func $m "process") (memory (core memory $m "memory")) (realloc (core func $m "cabi_realloc"))))
  (export "process" (func $process))
  (func $shutdown
    (param "shard" $shard-info) (param "reason" $reason)
    (canon lift (core func $m "shutdown") (memory (core memory $m "memory")) (realloc (core func $m "cabi_realloc"))))
  (export "shutdown" (func $shutdown))
)
