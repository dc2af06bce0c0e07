//! Mask algebra laws on arbitrary masks, and packed-byte parsing of arbitrary
//! bytes (which must be accepted or rejected with an error, never panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prunus_core::{Grouping, Mask, NofM, Shape};

fuzz_target!(|input: (u16, Vec<u8>, Vec<u8>, u8, u8)| {
    let (len, a, b, n, m) = input;
    let len = (len % 2048) as usize;
    let shape = Shape::vector(len);
    // Arbitrary bytes: parse or reject, never panic.
    let _ = Mask::from_bytes(shape.clone(), &a);
    let bit = |bytes: &[u8], i: usize| bytes.get(i / 8).is_some_and(|x| x >> (i % 8) & 1 == 1);
    let x = Mask::from_fn(shape.clone(), |i| bit(&a, i));
    let y = Mask::from_fn(shape.clone(), |i| bit(&b, i));

    let and = x.and(&y).unwrap();
    let or = x.or(&y).unwrap();
    assert_eq!(and.not(), x.not().or(&y.not()).unwrap());
    assert_eq!(or.count_kept() + and.count_kept(), x.count_kept() + y.count_kept());
    assert_eq!(x.and_not(&y).unwrap(), x.and(&y.not()).unwrap());
    assert_eq!(x.xor(&x).unwrap(), Mask::prune_all(shape.clone()));
    assert!(and.is_subset_of(&x).unwrap());
    assert_eq!(Mask::from_bytes(shape.clone(), &x.to_bytes()).unwrap(), x);
    assert_eq!(x.kept().count() as u64, x.count_kept());

    // Expansion of a unit mask to weights and back.
    let rows = 1 + (n as usize % 8);
    if let Ok(w) = Shape::matrix(rows, len) {
        let units = Mask::from_fn(Shape::vector(rows), |i| bit(&a, i));
        let e = units.expand(Grouping::Rows, &w).unwrap();
        if len > 0 {
            assert_eq!(e.reduce_any(Grouping::Rows).unwrap(), units);
        }
    }
    // N:M checks accept or reject, never panic.
    let _ = x.n_of_m_violations(NofM { n: n as usize % 9, m: m as usize % 9 });
});
