//! Two threads on disjoint keys (thread t uses keys 2k + t): each thread's
//! results must match its own sequential model, and the final table the
//! union of both models.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlock_fuzz::{apply_key_op, assert_same, table, KeyOp, Model};

fuzz_target!(|ops: (Vec<KeyOp>, Vec<KeyOp>)| {
    let table = table();
    let models: Vec<Model> = std::thread::scope(|s| {
        let run = |t: u32, ops: Vec<KeyOp>| {
            let table = &table;
            s.spawn(move || {
                let mut model = Model::new();
                for op in ops {
                    apply_key_op(table, &mut model, op, |k| 2 * u32::from(k) + t);
                }
                model
            })
        };
        let handles = [run(0, ops.0), run(1, ops.1)];
        handles.map(|h| h.join().unwrap()).into()
    });
    let union: Model = models.into_iter().flatten().collect();
    assert_same(&table, &union);
});
