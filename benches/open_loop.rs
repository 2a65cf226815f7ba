//! An open-loop HTTP/1 load generator for the soak and overload script: requests are sent on a
//! fixed schedule (phases of constant rate), whatever the server's speed, over a pool of
//! keep-alive connections; a request that finds every connection busy waits for one, and that
//! wait counts in its latency (no coordinated omission). The client's own timer lateness does
//! not count: latency runs from when the request was due and released, to its last body byte.
//! With `--grow-to M` the pool opens another connection whenever a request is due and none is
//! idle, up to M, as independent clients would: the server then holds the backlog and can refuse
//! it, instead of the client queueing it out of the server's sight.
//!
//! Usage:
//! `open_loop --addr 127.0.0.1:8080 --path /v2/models/m/infer --body-file body.json
//!  --connections 256 [--grow-to 4096] --phase 7000:600 --phase 14000:60 [--interval-ms 1000]`
//!
//! Prints one JSON object per interval (by send time) and per phase: requests sent, answers by
//! status (2xx, 429, 503, other), transport errors, and latency percentiles of the 2xx answers in
//! µs.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

/// One constant-rate stretch of the schedule.
#[derive(Clone, Copy)]
struct Phase {
    rate: f64,
    seconds: f64,
}

struct Options {
    addr: String,
    path: String,
    body: Bytes,
    connections: usize,
    grow_to: usize,
    phases: Vec<Phase>,
    interval: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut path = None;
    let mut body = None;
    let mut connections = 256;
    let mut grow_to = None;
    let mut phases = Vec::new();
    let mut interval = Duration::from_secs(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--path" => path = Some(value()?),
            "--body-file" => {
                let file = value()?;
                body = Some(std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?);
            }
            "--connections" => {
                connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?;
            }
            "--grow-to" => {
                grow_to = Some(value()?.parse().map_err(|e| format!("--grow-to: {e}"))?);
            }
            "--interval-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|e| format!("--interval-ms: {e}"))?;
                interval = Duration::from_millis(ms.max(1));
            }
            "--phase" => {
                let text = value()?;
                let (rate, seconds) = text
                    .split_once(':')
                    .ok_or(format!("--phase {text}: expected RATE:SECONDS"))?;
                let phase = Phase {
                    rate: rate.parse().map_err(|e| format!("--phase rate: {e}"))?,
                    seconds: seconds
                        .parse()
                        .map_err(|e| format!("--phase seconds: {e}"))?,
                };
                if !(phase.rate > 0.0 && phase.seconds > 0.0) {
                    return Err(format!("--phase {text}: rate and seconds must be positive"));
                }
                phases.push(phase);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if phases.is_empty() {
        return Err("at least one --phase RATE:SECONDS is needed".into());
    }
    Ok(Options {
        addr: addr.ok_or("--addr is needed")?,
        path: path.ok_or("--path is needed")?,
        body: Bytes::from(body.ok_or("--body-file is needed")?),
        connections: connections.max(1),
        grow_to: grow_to.unwrap_or(connections).max(connections.max(1)),
        phases,
        interval,
    })
}

/// A request due to be sent: when it was released, and the interval and phase it belongs to.
struct Ticket {
    released: Instant,
    slot: usize,
    phase: usize,
}

/// Counts of one interval or phase.
struct Tally {
    sent: u64,
    ok: u64,
    too_many: u64,
    unavailable: u64,
    other: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            sent: 0,
            ok: 0,
            too_many: 0,
            unavailable: 0,
            other: 0,
            errors: 0,
            // 1 µs to 100 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|e| {
                eprintln!("histogram: {e}");
                std::process::exit(2)
            }),
        }
    }

    fn json(&self, head: &str) -> String {
        let q = |q: f64| {
            if self.latency.is_empty() {
                0
            } else {
                self.latency.value_at_quantile(q)
            }
        };
        format!(
            "{{{head},\"sent\":{},\"ok\":{},\"s429\":{},\"s503\":{},\"other\":{},\"errors\":{},\
             \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
            self.sent,
            self.ok,
            self.too_many,
            self.unavailable,
            self.other,
            self.errors,
            q(0.5),
            q(0.9),
            q(0.99),
            self.latency.max()
        )
    }
}

/// What the workers saw, per interval (by release time) and per phase; shared by all of them.
struct Seen {
    intervals: Vec<Tally>,
    phases: Vec<Tally>,
}

impl Seen {
    fn record(&mut self, slot: usize, phase: usize, outcome: Option<u16>, micros: u64) {
        let slot = slot.min(self.intervals.len() - 1);
        for tally in [&mut self.intervals[slot], &mut self.phases[phase]] {
            tally.sent += 1;
            match outcome {
                Some(200..=299) => {
                    tally.ok += 1;
                    let _ = tally.latency.record(micros.max(1));
                }
                Some(429) => tally.too_many += 1,
                Some(503) => tally.unavailable += 1,
                Some(_) => tally.other += 1,
                None => tally.errors += 1,
            }
        }
    }
}

/// The dispatcher's view of the pool: workers waiting for a request, requests waiting for a
/// worker.
#[derive(Default)]
struct Pool {
    idle: AtomicUsize,
    queued: AtomicUsize,
}

async fn connect(addr: &str) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn worker(
    options: Arc<Options>,
    tickets: Arc<Mutex<mpsc::UnboundedReceiver<Ticket>>>,
    pool: Arc<Pool>,
    seen: Arc<std::sync::Mutex<Seen>>,
) {
    let mut sender = None;
    loop {
        pool.idle.fetch_add(1, Ordering::SeqCst);
        let ticket = tickets.lock().await.recv().await;
        pool.idle.fetch_sub(1, Ordering::SeqCst);
        let Some(ticket) = ticket else {
            return;
        };
        pool.queued.fetch_sub(1, Ordering::SeqCst);
        if sender.is_none() {
            sender = connect(&options.addr).await;
        }
        let outcome = match sender.as_mut() {
            None => None,
            Some(sender) => {
                let request = hyper::Request::post(options.path.as_str())
                    .header(hyper::header::HOST, options.addr.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(options.body.clone()));
                match request {
                    Ok(request) => match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            match response.into_body().collect().await {
                                Ok(_) => Some(status),
                                Err(_) => None,
                            }
                        }
                        Err(_) => None,
                    },
                    Err(_) => None,
                }
            }
        };
        let micros = u64::try_from(ticket.released.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Ok(mut seen) = seen.lock() {
            seen.record(ticket.slot, ticket.phase, outcome, micros);
        }
        if outcome.is_none() {
            sender = None;
        }
    }
}

#[tokio::main]
async fn main() {
    let options = match parse_args() {
        Ok(options) => Arc::new(options),
        Err(error) => {
            eprintln!("open_loop: {error}");
            std::process::exit(2);
        }
    };
    let total: f64 = options.phases.iter().map(|p| p.seconds).sum();
    let intervals = (total / options.interval.as_secs_f64()).ceil() as usize + 1;
    let (release, tickets) = mpsc::unbounded_channel();
    let tickets = Arc::new(Mutex::new(tickets));
    let pool = Arc::new(Pool::default());
    let seen = Arc::new(std::sync::Mutex::new(Seen {
        intervals: (0..intervals).map(|_| Tally::new()).collect(),
        phases: options.phases.iter().map(|_| Tally::new()).collect(),
    }));
    let spawn_worker = || {
        tokio::spawn(worker(
            Arc::clone(&options),
            Arc::clone(&tickets),
            Arc::clone(&pool),
            Arc::clone(&seen),
        ))
    };
    let mut workers: Vec<_> = (0..options.connections).map(|_| spawn_worker()).collect();
    // Every first worker waits for requests before the schedule starts.
    while pool.idle.load(Ordering::SeqCst) < options.connections {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    let mut phase_start = start;
    for (index, phase) in options.phases.iter().enumerate() {
        let count = (phase.rate * phase.seconds).round() as u64;
        for n in 0..count {
            let due = phase_start + Duration::from_secs_f64(n as f64 / phase.rate);
            tokio::time::sleep_until(due).await;
            let released = Instant::now().max(due);
            let ticket = Ticket {
                released,
                slot: ((released - start).as_nanos() / options.interval.as_nanos()) as usize,
                phase: index,
            };
            pool.queued.fetch_add(1, Ordering::SeqCst);
            if release.send(ticket).is_err() {
                break;
            }
            let waiting = pool.queued.load(Ordering::SeqCst);
            if waiting > 0
                && pool.idle.load(Ordering::SeqCst) == 0
                && workers.len() < options.grow_to
            {
                workers.push(spawn_worker());
            }
        }
        phase_start += Duration::from_secs_f64(phase.seconds);
    }
    drop(release);
    let workers_opened = workers.len();
    for worker in workers {
        let _ = worker.await;
    }
    let Ok(seen) = seen.lock() else {
        eprintln!("open_loop: a worker panicked");
        std::process::exit(1);
    };
    let (by_interval, by_phase) = (&seen.intervals, &seen.phases);
    let seconds = options.interval.as_secs_f64();
    for (index, tally) in by_interval.iter().enumerate() {
        if tally.sent > 0 {
            println!(
                "{}",
                tally.json(&format!(
                    "\"interval\":{index},\"t\":{:.3}",
                    index as f64 * seconds
                ))
            );
        }
    }
    eprintln!("open_loop: {workers_opened} connections at the end");
    for (index, (tally, phase)) in by_phase.iter().zip(&options.phases).enumerate() {
        println!(
            "{}",
            tally.json(&format!(
                "\"phase\":{index},\"rate\":{},\"seconds\":{}",
                phase.rate, phase.seconds
            ))
        );
    }
}
