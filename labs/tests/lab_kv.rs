//! The grader of lab `kv`: `cargo test -p labs --test lab_kv`. Each test starts your
//! server (`labs::kv::server`) on a free port and talks to it over real sockets; its
//! name says what it checks, and a failure says what was sent, expected and received.

#[path = "graders/kv.rs"]
mod grader;

use labs::kv;

#[test]
fn set_get_del_answer_as_the_protocol_says() {
    if let Err(m) = grader::check_commands(kv::server) {
        panic!("{m}")
    }
}

#[test]
fn bad_commands_get_error_and_the_connection_stays_open() {
    if let Err(m) = grader::check_errors_keep_connection(kv::server) {
        panic!("{m}")
    }
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    if let Err(m) = grader::check_pipelining(kv::server) {
        panic!("{m}")
    }
}

#[test]
fn clients_share_one_store() {
    if let Err(m) = grader::check_shared_store(kv::server) {
        panic!("{m}")
    }
}

#[test]
fn half_a_command_does_not_block_other_clients() {
    if let Err(m) = grader::check_half_command_does_not_block(kv::server) {
        panic!("{m}")
    }
}

#[test]
fn a_line_of_max_line_bytes_is_accepted() {
    if let Err(m) = grader::check_line_of_max_length_accepted(kv::server, kv::MAX_LINE) {
        panic!("{m}")
    }
}

#[test]
fn an_over_long_line_is_refused_without_harming_others() {
    if let Err(m) = grader::check_long_line_refused(kv::server, kv::MAX_LINE) {
        panic!("{m}")
    }
}

#[test]
fn two_workers_serve_200_open_connections() {
    if let Err(m) = grader::check_many_idle_clients(kv::server) {
        panic!("{m}")
    }
}
