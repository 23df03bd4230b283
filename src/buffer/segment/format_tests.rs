use super::*;

#[test]
fn record_id_display_and_parse() {
    let id = RecordId {
        segment: 3,
        offset: 1024,
    };
    assert_eq!(id.to_string(), "3:1024");
    assert_eq!("3:1024".parse::<RecordId>().unwrap(), id);
    let max = RecordId {
        segment: u64::MAX,
        offset: 0,
    };
    assert_eq!(max.to_string().parse::<RecordId>().unwrap(), max);
    let err = "abc".parse::<RecordId>().unwrap_err();
    assert!(err.to_string().contains("\"abc\""), "{err}");
    assert!(err.to_string().contains("<segment>:<offset>"), "{err}");
    for bad in ["", ":", "1:", ":2", "1:2:3", "-1:2", "+1:2", "1: 2", "x:1"] {
        assert!(bad.parse::<RecordId>().is_err(), "{bad:?} parsed");
    }
}
