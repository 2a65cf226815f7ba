//! An open-loop HTTP/1 load generator for the soak and overload script: requests are sent on a
//! fixed schedule (phases of constant rate), whatever the server's speed, over a pool of
//! keep-alive connections; a request that finds every connection busy waits for one, and that
//! wait counts in its latency (no coordinated omission). The client's own timer lateness does
//! not count: latency runs from when the request was due and released, to its last body byte.
//!
//! Usage:
//! `open_loop --addr 127.0.0.1:8080 --path /v2/models/m/infer --body-file body.json
//!  --connections 256 --phase 7000:600 --phase 14000:60 [--interval-ms 1000]`
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
    phases: Vec<Phase>,
    interval: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut path = None;
    let mut body = None;
    let mut connections = 256;
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
        phases,
        interval,
    })
}

/// A request due to be sent: when it was released, and the phase it belongs to.
struct Ticket {
    released: Instant,
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

    fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.too_many += other.too_many;
        self.unavailable += other.unavailable;
        self.other += other.other;
        self.errors += other.errors;
        let _ = self.latency.add(&other.latency);
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

/// What one connection worker saw, per interval (by release time) and per phase.
struct Seen {
    intervals: Vec<Tally>,
    phases: Vec<Tally>,
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
    start: Instant,
    intervals: usize,
) -> Seen {
    let mut seen = Seen {
        intervals: (0..intervals).map(|_| Tally::new()).collect(),
        phases: options.phases.iter().map(|_| Tally::new()).collect(),
    };
    let mut sender = None;
    loop {
        let Some(ticket) = tickets.lock().await.recv().await else {
            return seen;
        };
        if sender.is_none() {
            sender = connect(&options.addr).await;
        }
        let slot = ((ticket.released - start).as_nanos() / options.interval.as_nanos()) as usize;
        let slot = slot.min(intervals - 1);
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
        for tally in [&mut seen.intervals[slot], &mut seen.phases[ticket.phase]] {
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
    let start = Instant::now();
    let workers: Vec<_> = (0..options.connections)
        .map(|_| {
            tokio::spawn(worker(
                Arc::clone(&options),
                Arc::clone(&tickets),
                start,
                intervals,
            ))
        })
        .collect();
    let mut phase_start = start;
    for (index, phase) in options.phases.iter().enumerate() {
        let count = (phase.rate * phase.seconds).round() as u64;
        for n in 0..count {
            let due = phase_start + Duration::from_secs_f64(n as f64 / phase.rate);
            tokio::time::sleep_until(due).await;
            let ticket = Ticket {
                released: Instant::now().max(due),
                phase: index,
            };
            if release.send(ticket).is_err() {
                break;
            }
        }
        phase_start += Duration::from_secs_f64(phase.seconds);
    }
    drop(release);
    let mut by_interval: Vec<Tally> = (0..intervals).map(|_| Tally::new()).collect();
    let mut by_phase: Vec<Tally> = options.phases.iter().map(|_| Tally::new()).collect();
    for worker in workers {
        if let Ok(seen) = worker.await {
            for (all, one) in by_interval.iter_mut().zip(&seen.intervals) {
                all.add(one);
            }
            for (all, one) in by_phase.iter_mut().zip(&seen.phases) {
                all.add(one);
            }
        }
    }
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
