use super::lexical::{check_host_port, check_uses, is_semver, parse_duration, range_len};

#[test]
fn semver() {
    for ok in [
        "1.0.0",
        "0.0.1",
        "1.2.3-alpha.1",
        "1.2.3+build.5",
        "1.0.0-0.3.7",
        "10.20.30",
    ] {
        assert!(is_semver(ok), "{ok}");
    }
    for bad in [
        "1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+", "",
    ] {
        assert!(!is_semver(bad), "{bad}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30m"), Some(1800));
    assert_eq!(parse_duration("24h"), Some(86_400));
    assert_eq!(parse_duration("7d"), Some(604_800));
    assert_eq!(parse_duration("15s"), Some(15));
    for bad in ["0s", "m", "10", "1.5h", "10w", "-1h", ""] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn hosts() {
    for ok in [
        "example.com",
        "example.com:443",
        "10.0.0.1:8080",
        "*.github.com",
        "localhost",
    ] {
        assert!(check_host_port(ok).is_ok(), "{ok}");
    }
    for bad in [
        "example.com:0",
        "example.com:70000",
        "exa mple.com",
        "-a.com",
        "a..b",
        "",
        "h:p",
    ] {
        assert!(check_host_port(bad).is_err(), "{bad}");
    }
}

#[test]
fn uses() {
    for ok in [
        "builtin:echo",
        "builtin:http.get",
        "acme/deploy",
        "registry:tool/x",
    ] {
        assert!(check_uses(ok).is_ok(), "{ok}");
    }
    for bad in ["builtin:", "builtin:Echo", "Deploy", "", "builtin:a/b"] {
        assert!(check_uses(bad).is_err(), "{bad}");
    }
}

#[test]
fn ranges() {
    assert_eq!(range_len(0, 10, 1), 10);
    assert_eq!(range_len(0, 10, 3), 4);
    assert_eq!(range_len(10, 0, -2), 5);
    assert_eq!(range_len(0, 10, -1), 0);
}
