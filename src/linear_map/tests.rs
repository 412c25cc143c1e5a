use std::collections::HashMap;

use super::LinearMap;

/// A deliberately bad hash (few distinct homes) forces long clusters,
/// wrap-around and back-shifts across the array's end.
fn h(key: u32) -> u64 {
    u64::from(key % 5) * 3 + 5 // homes near the end of small tables too
}

fn insert(map: &mut LinearMap<u32, u32>, k: u32, v: u32) -> Option<u32> {
    match map.lookup(h(k), |x| *x == k) {
        Ok(i) => Some(std::mem::replace(map.value_mut(i), v)),
        Err(vacant) => {
            map.insert_vacant(vacant, h(k), k, v);
            None
        }
    }
}

fn check(map: &LinearMap<u32, u32>, model: &HashMap<u32, u32>) {
    assert_eq!(map.len(), model.len());
    for (k, v) in model {
        let i = map.find(h(*k), |x| x == k).expect("present key not found");
        assert_eq!(map.value(i), v);
    }
    let mut seen: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
    seen.sort_unstable();
    let mut want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
    want.sort_unstable();
    assert_eq!(seen, want);
}

#[test]
fn matches_a_hash_map_under_churn_with_colliding_hashes() {
    let mut map = LinearMap::with_capacity(0);
    let mut model = HashMap::new();
    let mut x = 12345u32;
    let steps = if cfg!(miri) { 600 } else { 3000 };
    for step in 0..steps {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let k = (x >> 16) % 40;
        if x.is_multiple_of(3) {
            let got = map.find(h(k), |y| *y == k).map(|i| map.remove_at(i).1);
            assert_eq!(got, model.remove(&k));
        } else {
            assert_eq!(insert(&mut map, k, step), model.insert(k, step));
        }
        if step % 97 == 0 {
            check(&map, &model);
        }
    }
    check(&map, &model);
}

#[test]
fn retain_visits_each_entry_once_across_wrapped_clusters() {
    let mut map = LinearMap::with_capacity(20);
    let mut model = HashMap::new();
    for k in 0..20 {
        insert(&mut map, k, k);
        model.insert(k, k);
    }
    let mut visits = HashMap::new();
    map.retain(|k, v| {
        *visits.entry(*k).or_insert(0) += 1;
        *v += 100;
        k % 3 != 0
    });
    assert!(visits.values().all(|&n| n == 1), "{visits:?}");
    assert_eq!(visits.len(), 20);
    model.retain(|k, v| {
        *v += 100;
        k % 3 != 0
    });
    check(&map, &model);
}

#[test]
fn grows_and_shrinks() {
    let mut map = LinearMap::with_capacity(0);
    assert_eq!(
        map.find(7, |_: &u32| true),
        None,
        "empty table has no slots"
    );
    // Five distinct hashes make this quadratic: keep it small under miri.
    let n = if cfg!(miri) { 150 } else { 1000 };
    for k in 0..n {
        insert(&mut map, k, k);
    }
    assert!(map.capacity() >= n as usize);
    for k in 0..n - 10 {
        let i = map.find(h(k), |x| *x == k).unwrap();
        map.remove_at(i);
    }
    map.shrink_to(0);
    assert!(map.capacity() < 100);
    let model: HashMap<u32, u32> = (n - 10..n).map(|k| (k, k)).collect();
    check(&map, &model);
}

#[test]
#[should_panic(expected = "capacity overflow")]
fn a_capacity_past_the_limit_panics() {
    // Used to round to 0 in release builds, and so to an 8-slot map.
    let _ = LinearMap::<u64, u64>::with_capacity(usize::MAX - 4);
}
