//! `memosd-loadgen`: replays encoded unary gRPC requests against a daemon from
//! `--clients` connections at once, each sending its next request when the last one
//! is answered (a closed loop, like that many application threads).
//!
//! Why it exists: on a small machine the benchmark's clients share the cores with the
//! daemon. Python client threads spend about as much CPU per search as the daemon's
//! own gRPC layer, so they inflate the daemon's latency with their own load; this
//! client, on one thread, spends a fraction of that.
//!
//! ```text
//! memosd-loadgen --address 127.0.0.1:50051 --method /memosd.v1.MemoryService/SearchMemories \
//!     --clients 8 --requests requests.bin --responses responses.bin
//! ```
//!
//! Client `i` sends requests `i`, `i + clients`, ... of the file. Before the clock
//! starts, every connection is opened and sends its first request once. On stdout: one
//! JSON object with the calls, wall and CPU seconds of the timed part, and every
//! call's latency in milliseconds, in request order; the responses go to their file
//! in request order. A call that fails stops the run with its status on stderr.

mod codec;
mod frames;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use codec::RawBytes;

/// A call that takes longer than this fails the run instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    address: String,
    method: PathAndQuery,
    clients: usize,
    requests: String,
    responses: String,
}

const USAGE: &str = "usage: memosd-loadgen --address HOST:PORT --method /package.Service/Method \
--clients N --requests FILE --responses FILE";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut given = std::collections::HashMap::new();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or(format!("unexpected argument {flag:?}"))?;
        if !["address", "method", "clients", "requests", "responses"].contains(&name) {
            return Err(format!("unknown flag {flag}"));
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        given.insert(name.to_owned(), value);
    }
    let mut take = |name: &str| given.remove(name).ok_or(format!("--{name} is required"));
    let method = take("method")?;
    let clients = take("clients")?;
    Ok(Args {
        address: take("address")?,
        method: PathAndQuery::try_from(method.as_str())
            .ok()
            .filter(|p| p.path().matches('/').count() == 2)
            .ok_or(format!(
                "--method {method:?} is not /package.Service/Method"
            ))?,
        clients: clients
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("--clients {clients:?} is not a positive number"))?,
        requests: take("requests")?,
        responses: take("responses")?,
    })
}

/// One timed call: the request's index, its latency and the response.
type Answer = (usize, f64, Bytes);

async fn call(
    grpc: &mut Grpc<Channel>,
    method: &PathAndQuery,
    request: Bytes,
) -> Result<Bytes, String> {
    grpc.ready().await.map_err(|e| format!("connection: {e}"))?;
    let mut request = tonic::Request::new(request);
    request.set_timeout(CALL_TIMEOUT);
    let response = grpc.unary(request, method.clone(), RawBytes).await;
    response
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// Sends `requests` (each with its index in the file) through `grpc`, one at a time.
async fn client_loop(
    mut grpc: Grpc<Channel>,
    method: PathAndQuery,
    requests: Vec<(usize, Bytes)>,
) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::with_capacity(requests.len());
    for (index, request) in requests {
        let start = Instant::now();
        let response = call(&mut grpc, &method, request).await;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        answers.push((
            index,
            ms,
            response.map_err(|e| format!("request {index}: {e}"))?,
        ));
    }
    Ok(answers)
}

/// User plus system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

async fn run(args: Args, requests: Vec<Bytes>) -> Result<String, String> {
    let uri = format!("http://{}", args.address);
    let endpoint = Channel::from_shared(uri).map_err(|e| format!("--address: {e}"))?;
    let clients = args.clients.min(requests.len());
    let mut connections = Vec::with_capacity(clients);
    for (i, first) in requests.iter().take(clients).enumerate() {
        let channel = endpoint.connect().await;
        let mut grpc =
            Grpc::new(channel.map_err(|e| format!("connecting to {}: {e}", args.address))?);
        call(&mut grpc, &args.method, first.clone())
            .await
            .map_err(|e| format!("warm-up call of client {i}: {e}"))?;
        connections.push(grpc);
    }
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, grpc)| {
            let mine = requests
                .iter()
                .cloned()
                .enumerate()
                .skip(i)
                .step_by(clients)
                .collect();
            tokio::spawn(client_loop(grpc, args.method.clone(), mine))
        })
        .collect();
    let mut answers = Vec::with_capacity(requests.len());
    for task in tasks {
        answers.extend(task.await.map_err(|e| format!("client task: {e}"))??);
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    answers.sort_by_key(|a| a.0);
    let responses = frames::join(answers.iter().map(|a| &a.2));
    std::fs::write(&args.responses, responses).map_err(|e| format!("--responses: {e}"))?;
    let latencies: Vec<String> = answers.iter().map(|a| format!("{:.4}", a.1)).collect();
    Ok(format!(
        "{{\"calls\": {}, \"wall_s\": {wall:.6}, \"cpu_s\": {cpu:.6}, \"latencies_ms\": [{}]}}",
        answers.len(),
        latencies.join(", ")
    ))
}

fn main() -> ExitCode {
    let outcome = parse_args(std::env::args().skip(1))
        .map_err(|e| format!("{e}\n{USAGE}"))
        .and_then(|args| {
            let data = std::fs::read(&args.requests).map_err(|e| format!("--requests: {e}"))?;
            let requests =
                frames::split(Bytes::from(data)).map_err(|e| format!("--requests: {e}"))?;
            if requests.is_empty() {
                return Err("--requests: the file holds no request".into());
            }
            // One thread: the client's own CPU stays small and easy to account for.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            runtime
                .map_err(|e| format!("runtime: {e}"))?
                .block_on(run(args, requests))
        });
    match outcome {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("memosd-loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Result<Args, String> {
        parse_args(text.split_whitespace().map(String::from))
    }

    #[test]
    fn every_flag_is_read() {
        let a =
            args("--address h:1 --method /p.S/M --clients 8 --requests r --responses s").unwrap();
        assert_eq!(
            (a.address.as_str(), a.method.path(), a.clients),
            ("h:1", "/p.S/M", 8)
        );
        assert_eq!((a.requests.as_str(), a.responses.as_str()), ("r", "s"));
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        let base = "--address h:1 --requests r --responses s";
        let error = |text: &str| args(text).err().unwrap();
        assert_eq!(
            error(&format!("{base} --method /p.S/M")),
            "--clients is required"
        );
        assert!(error(&format!("{base} --method /p.S/M --clients 0")).starts_with("--clients"));
        assert!(error(&format!("{base} --method /p.S/M --clients x")).starts_with("--clients"));
        assert!(error(&format!("{base} --method p.S --clients 1")).starts_with("--method"));
        assert_eq!(error("--address"), "--address needs a value");
        assert_eq!(error("--port 1"), "unknown flag --port");
        assert_eq!(error("address"), "unexpected argument \"address\"");
    }
}
