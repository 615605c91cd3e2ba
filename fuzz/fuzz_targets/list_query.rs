//! `GET /1/objects/{object}?…`: the raw query string, read as the `Params` extractor
//! reads it, through `records::query::parse` for one of the example objects, then into
//! SQL for both databases (see `livebase_fuzz::check_list_query`).
//!
//! Input: one selector byte (which object, which page-size limit), then the query
//! string, e.g. `\x00filter=[{"fieldName":"price","operator":"greaterThan","value":3}]`.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use livebase::records::query;
use livebase_fuzz::{check_list_query, example_objects};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, query_string)) = data.split_first() else {
        return;
    };
    let objects = example_objects();
    let object = &objects[usize::from(selector) % objects.len()];
    let max_page_size = [200, 1, u32::MAX][usize::from(selector / 16) % 3];
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(query_string) else {
        return;
    };
    let params: HashMap<String, String> = pairs.into_iter().collect();
    if let Ok(parsed) = query::parse(object, &params, max_page_size) {
        check_list_query(object, &parsed, max_page_size);
    }
});
