//! The grader of lab `web`: `cargo test -p labs --test lab_web`. Each test makes a
//! temporary directory of files, starts your server (`labs::web::server`) on it on a
//! free port and sends it raw HTTP requests; its name says what it checks, and a
//! failure says what was sent, expected and received.

#[path = "graders/web.rs"]
mod grader;

use labs::web;

#[test]
fn slash_and_index_html_serve_the_index() {
    if let Err(m) = grader::check_index(web::server) {
        panic!("{m}")
    }
}

#[test]
fn each_file_has_its_content_type() {
    if let Err(m) = grader::check_content_types(web::server) {
        panic!("{m}")
    }
}

#[test]
fn a_binary_file_comes_back_byte_for_byte() {
    if let Err(m) = grader::check_binary_file(web::server) {
        panic!("{m}")
    }
}

#[test]
fn a_percent_encoded_name_is_decoded() {
    if let Err(m) = grader::check_percent_encoded_name(web::server) {
        panic!("{m}")
    }
}

#[test]
fn a_missing_file_is_404_with_an_html_page() {
    if let Err(m) = grader::check_not_found(web::server) {
        panic!("{m}")
    }
}

#[test]
fn methods_other_than_get_are_405_or_501() {
    if let Err(m) = grader::check_other_methods(web::server) {
        panic!("{m}")
    }
}

#[test]
fn a_malformed_request_line_is_400() {
    if let Err(m) = grader::check_bad_request(web::server) {
        panic!("{m}")
    }
}

#[test]
fn no_path_escapes_the_root() {
    if let Err(m) = grader::check_path_escape(web::server) {
        panic!("{m}")
    }
}

#[test]
fn a_slow_client_does_not_block_another() {
    if let Err(m) = grader::check_slow_client_does_not_block(web::server) {
        panic!("{m}")
    }
}
