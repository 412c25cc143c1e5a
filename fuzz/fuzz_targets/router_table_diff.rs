//! Differential: an arbitrary operation sequence on RouterTable and on
//! `std::collections::HashMap`, compared after every operation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlock_fuzz::{apply, assert_same, table, Model, Op};

fuzz_target!(|ops: Vec<Op>| {
    let table = table();
    let mut model = Model::new();
    for op in ops {
        apply(&table, &mut model, op);
    }
    assert_same(&table, &model);
});
