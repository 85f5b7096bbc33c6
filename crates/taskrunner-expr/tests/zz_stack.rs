use serde_json::json;
use taskrunner_expr::*;
#[test]
fn which() {
    let cases = [
        format!("{}@{}", "[".repeat(120), "]".repeat(120)),
        format!("{}a", "!".repeat(120)),
        format!("{}a{}", "abs(".repeat(100), ")".repeat(100)),
        format!("{}a{}", "not_null(".repeat(100), ")".repeat(100)),
        format!("{}a{}", "{k: ".repeat(100), "}".repeat(100)),
        format!("{}`1`{}", "sort_by(@, &".repeat(60), ")".repeat(60)),
        vec!["a[*]"; 110].join("."),
        vec!["a"; 120].join(" || "),
    ];
    for (i, src) in cases.into_iter().enumerate() {
        for kb in [8192usize, 4096, 2048, 1024, 512] {
            let s = src.clone();
            let r = std::process::Command::new(std::env::current_exe().unwrap())
                .arg("--exact")
                .arg("child")
                .arg("--nocapture")
                .env("CASE", &s)
                .env("KB", kb.to_string())
                .output()
                .unwrap();
            println!(
                "case {i} kb {kb}: {}",
                if r.status.success() { "ok" } else { "FAIL" }
            );
        }
    }
}
#[test]
fn child() {
    let Ok(src) = std::env::var("CASE") else {
        return;
    };
    let kb: usize = std::env::var("KB").unwrap().parse().unwrap();
    std::thread::Builder::new()
        .stack_size(kb * 1024)
        .spawn(move || {
            let p = Expression::parse(&src);
            if let Ok(e) = p {
                let _ = e.evaluate(&json!({"a": [{"a": [1]}]}));
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
