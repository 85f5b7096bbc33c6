//! Fuzz target: arbitrary text as a manifest, through validation, planning and simulation.
//! Nothing may panic, hang or allocate without bound; invalid input must yield diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match taskrunner_manifest::parse(text) {
        Ok(manifest) => {
            if let Ok(plan) = taskrunner_plan::plan(&manifest, &serde_json::Map::new()) {
                let sim = taskrunner_plan::simulate(&plan);
                assert_eq!(sim.plan_hash, plan.hash());
                let _ = taskrunner_plan::plan_tree(&plan);
            }
        }
        Err(diagnostics) => assert!(!diagnostics.is_empty(), "an error must say what is wrong"),
    }
});
