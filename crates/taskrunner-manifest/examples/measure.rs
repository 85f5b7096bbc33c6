//! temporary measurement harness (deleted after use)
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let yaml = if which == "bomb" {
        let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            let items = vec![prev.as_str(); 9].join(", ");
            yaml.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        yaml
    } else {
        let mut y = String::from("apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: big, version: 1.0.0}\nspec:\n  inputs: [{name: target, type: string}]\n  steps:\n");
        for i in 0..10_000 {
            let prev = if i == 0 { "inputs.target".to_string() } else { format!("steps.s{}.outputs", i - 1) };
            y.push_str(&format!("    - id: s{i}\n      when: \"inputs.target != `x`\"\n      run: {{uses: builtin:echo, with: {{msg: \"{{{{ {prev} }}}}\", n: {i}}}}}\n"));
        }
        y
    };
    println!("input bytes {}", yaml.len());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let r = taskrunner_manifest::parse(&yaml);
        let el = t.elapsed();
        match r {
            Ok(m) => println!("ok {} steps in {el:?}", m.steps().len()),
            Err(d) => println!("err in {el:?}: {}", d.iter().next().map(|d| d.to_string()).unwrap_or_default()),
        }
    }
}
