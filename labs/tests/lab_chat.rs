//! The grader of lab `chat`: `cargo test -p labs --test lab_chat`. Each test starts your
//! server (`labs::chat::server`) on a free port and connects several clients to it over
//! real sockets; its name says what it checks, and a failure says what was sent,
//! expected and received.

#[path = "graders/chat.rs"]
mod grader;

use labs::chat;

#[test]
fn a_line_reaches_the_other_client_and_not_the_sender() {
    if let Err(m) = grader::check_two_clients(chat::server) {
        panic!("{m}")
    }
}

#[test]
fn joins_and_leaves_are_announced() {
    if let Err(m) = grader::check_join_and_leave(chat::server) {
        panic!("{m}")
    }
}

#[test]
fn a_taken_or_empty_name_is_refused() {
    if let Err(m) = grader::check_bad_names(chat::server) {
        panic!("{m}")
    }
}

#[test]
fn three_clients_get_each_others_lines_in_order() {
    if let Err(m) = grader::check_order(chat::server) {
        panic!("{m}")
    }
}

#[test]
fn a_client_that_vanishes_does_not_stop_the_others() {
    if let Err(m) = grader::check_abrupt_disconnect(chat::server) {
        panic!("{m}")
    }
}

#[test]
fn a_line_of_max_line_bytes_is_relayed() {
    if let Err(m) = grader::check_line_of_max_length(chat::server, chat::MAX_LINE) {
        panic!("{m}")
    }
}

#[test]
fn an_over_long_line_gets_an_error_and_reaches_nobody() {
    if let Err(m) = grader::check_long_line(chat::server, chat::MAX_LINE) {
        panic!("{m}")
    }
}

#[test]
fn a_flood_without_newline_does_not_disturb_the_others() {
    if let Err(m) = grader::check_flood(chat::server, chat::MAX_LINE) {
        panic!("{m}")
    }
}

#[test]
fn eight_clients_at_once_are_all_served() {
    if let Err(m) = grader::check_many_clients(chat::server) {
        panic!("{m}")
    }
}

#[test]
fn a_client_that_reads_nothing_is_cut_off_and_the_room_goes_on() {
    if let Err(m) = grader::check_slow_reader(chat::server, chat::MAX_LINE) {
        panic!("{m}")
    }
}
