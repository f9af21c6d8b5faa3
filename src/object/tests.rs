use std::collections::BTreeMap;

use super::{ErrorKind, S3Config, S3Url, check_name, parse_credentials};

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn s3_url_gives_bucket_and_prefix() {
    let u = S3Url::parse("s3://my-bucket/stores/home").unwrap();
    assert_eq!(
        (u.bucket.as_str(), u.prefix.as_str()),
        ("my-bucket", "stores/home")
    );
    assert_eq!(u.to_string(), "s3://my-bucket/stores/home");
    let u = S3Url::parse("s3://my-bucket/stores/").unwrap();
    assert_eq!(u.prefix, "stores", "a trailing '/' is dropped");
    let u = S3Url::parse("s3://my-bucket").unwrap();
    assert_eq!(
        (u.prefix.as_str(), u.to_string().as_str()),
        ("", "s3://my-bucket")
    );
}

#[test]
fn bad_s3_urls_are_refused_with_the_reason() {
    let cases = [
        ("http://bucket/p", "not an s3:// URL"),
        ("bucket/p", "not an s3:// URL"),
        ("s3://", "no bucket name"),
        ("s3:///prefix", "no bucket name"),
        ("s3://ab/p", "3 to 63"),
        ("s3://My_Bucket/p", "lowercase"),
        ("s3://-bucket/p", "start and end"),
        ("s3://a..b/p", "two dots"),
        ("s3://bucket/a//b", "empty component"),
        ("s3://bucket//a", "empty component"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/p?region=x", "no query"),
    ];
    for (url, why) in cases {
        let e = S3Url::parse(url).expect_err(url);
        assert_eq!(e.kind, ErrorKind::Other, "{url}");
        let msg = e.to_string();
        assert!(msg.contains(why), "{url}: {msg:?} does not say {why:?}");
        assert!(msg.contains(url), "{url}: {msg:?} does not quote the URL");
    }
}

#[test]
fn object_names_are_checked() {
    assert!(check_name("seg/000001").is_ok());
    for bad in ["", "/a", "a/", "a//b", ".", "a/./b", "a/..", "a\nb"] {
        assert!(check_name(bad).is_err(), "{bad:?} accepted");
    }
    assert!(check_name(&"x".repeat(901)).is_err());
}

#[test]
fn config_from_vars_takes_the_standard_names() {
    let v = vars(&[
        ("AWS_ENDPOINT", "http://127.0.0.1:7480"),
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "SK"),
        ("AWS_DEFAULT_REGION", "eu-west-3"),
        ("AWS_ALLOW_HTTP", "true"),
    ]);
    let c = S3Config::from_vars("s3://bucket/p", &v).unwrap();
    assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:7480"));
    assert_eq!(
        (c.access_key_id.as_str(), c.secret_access_key.as_str()),
        ("AK", "SK")
    );
    assert_eq!(c.region, "eu-west-3");
    assert!(c.allow_http && !c.virtual_hosted_style);
    assert!(
        !format!("{c:?}").contains("SK"),
        "Debug must not print the secret: {c:?}"
    );
}

#[test]
fn config_says_what_is_missing_or_wrong() {
    let keys = [("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")];
    let e = S3Config::from_vars("s3://bucket/p", &vars(&keys[..1])).unwrap_err();
    assert!(e.to_string().contains("no AWS_SECRET_ACCESS_KEY"), "{e}");
    let e = S3Config::from_vars("s3://bucket/p", &vars(&keys[1..])).unwrap_err();
    assert!(e.to_string().contains("no AWS_ACCESS_KEY_ID"), "{e}");
    let mut v = vars(&keys);
    v.insert("AWS_ENDPOINT".into(), "http://127.0.0.1:1".into());
    let e = S3Config::from_vars("s3://bucket/p", &v).unwrap_err();
    assert!(e.to_string().contains("AWS_ALLOW_HTTP=true"), "{e}");
    v.insert("AWS_ENDPOINT".into(), "127.0.0.1:1".into());
    let e = S3Config::from_vars("s3://bucket/p", &v).unwrap_err();
    assert!(e.to_string().contains("expected http://"), "{e}");
    let mut v = vars(&keys);
    v.insert("AWS_ALLOW_HTTP".into(), "maybe".into());
    let e = S3Config::from_vars("s3://bucket/p", &v).unwrap_err();
    assert!(e.to_string().contains("expected true or false"), "{e}");
}

#[test]
fn credentials_file_in_env_form() {
    let text = "# from scripts/ceph.sh\nexport AWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY=\"S K\"\nAWS_ENDPOINT=http://h:1\n";
    let m = parse_credentials(text, "default").unwrap();
    assert_eq!(m["AWS_ACCESS_KEY_ID"], "AK");
    assert_eq!(m["AWS_SECRET_ACCESS_KEY"], "S K");
    assert_eq!(m["AWS_ENDPOINT"], "http://h:1");
}

#[test]
fn credentials_file_in_aws_cli_form_reads_one_profile() {
    let text = "[other]\naws_access_key_id = NO\n\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\nregion = r1\nendpoint_url = http://h:1\n[profile x]\naws_access_key_id = XK\n";
    let m = parse_credentials(text, "default").unwrap();
    assert_eq!(m["AWS_ACCESS_KEY_ID"], "AK");
    assert_eq!(m["AWS_SECRET_ACCESS_KEY"], "SK");
    assert_eq!(m["AWS_REGION"], "r1");
    assert_eq!(m["AWS_ENDPOINT"], "http://h:1");
    assert_eq!(
        parse_credentials(text, "x").unwrap()["AWS_ACCESS_KEY_ID"],
        "XK"
    );
    let e = parse_credentials(text, "missing").unwrap_err();
    assert!(e.contains("no [missing] section"), "{e}");
}

#[test]
fn credentials_file_refuses_unknown_settings_and_garbage() {
    let e = parse_credentials("AWS_ACESS_KEY_ID=typo\n", "default").unwrap_err();
    assert!(e.contains("line 1") && e.contains("unknown setting"), "{e}");
    let e = parse_credentials("AWS_ACCESS_KEY_ID=a\njust words\n", "default").unwrap_err();
    assert!(e.contains("line 2") && e.contains("KEY=VALUE"), "{e}");
}

#[test]
fn config_reads_a_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds");
    std::fs::write(
        &path,
        "AWS_ACCESS_KEY_ID=FILEKEY\nAWS_SECRET_ACCESS_KEY=FILESECRET\n",
    )
    .unwrap();
    let c = S3Config::from_env("s3://bucket/p", Some(&path)).unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.secret_access_key.as_str()),
        ("FILEKEY", "FILESECRET")
    );
    let e = S3Config::from_env("s3://bucket/p", Some(&dir.path().join("absent"))).unwrap_err();
    assert!(
        e.to_string().contains("cannot read credentials file"),
        "{e}"
    );
}

#[test]
fn an_existing_object_counts_as_ours_only_with_the_same_bytes() {
    use super::{PutOutcome, judge_existing};
    assert_eq!(
        judge_existing("s3://b/p/x", b"abc", b"abc").unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(
        judge_existing("s3://b/p/x", b"", b"").unwrap(),
        PutOutcome::AlreadyThere
    );
    for there in [&b"abd"[..], b"ab", b"abcd", b""] {
        let e = judge_existing("s3://b/p/x", b"abc", there).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{there:?}");
        assert!(e.to_string().contains("another writer created it"), "{e}");
    }
}
