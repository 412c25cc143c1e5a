//! An owner/consumer fan-out. One owner task talks to a (simulated) car and
//! publishes its readings through a `Watch`; consumers subscribe:
//!
//! * the *printer* prints speed and location every couple of seconds;
//! * the *logger* appends `<date>: <speed>, <location>` for every reading;
//! * the *speeder* raises the speed by 1 every few seconds by sending a set
//!   request to the owner, the only task that talks to the car.
//!
//! Shutdown is a `Watch<bool>` too: when the stop signal fires, the owner
//! stops and drops the readings' `Watch`, so the logger's `changed` returns
//! `Closed` once it has logged the last reading, and every task ends.
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use shardlock::Watch;
use tokio::sync::mpsc;

/// Where the car is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ns, ew) = (
            if self.lat >= 0.0 { 'N' } else { 'S' },
            if self.lon >= 0.0 { 'E' } else { 'W' },
        );
        write!(f, "{:.5} {ns} {:.5} {ew}", self.lat.abs(), self.lon.abs())
    }
}

/// The simulated car: it drives east at its speed.
#[derive(Debug)]
pub struct Car {
    speed: u32,
    location: Location,
    moved_at: Instant,
}

impl Car {
    pub fn new(speed: u32) -> Self {
        Car {
            speed,
            location: Location {
                lat: 52.52,
                lon: 13.405,
            },
            moved_at: Instant::now(),
        }
    }

    pub fn is_connected(&self) -> bool {
        true
    }

    pub fn get_speed(&self) -> u32 {
        self.speed
    }

    pub fn set_speed(&mut self, kmh: u32) {
        self.drive();
        self.speed = kmh;
    }

    pub fn get_location(&mut self) -> Location {
        self.drive();
        self.location
    }

    /// Moves the car for the time since it last moved (about 111 km per
    /// degree).
    fn drive(&mut self) {
        let hours = self.moved_at.elapsed().as_secs_f64() / 3600.0;
        self.location.lon += f64::from(self.speed) * hours / 111.0;
        self.moved_at = Instant::now();
    }
}

/// One reading the owner publishes.
#[derive(Clone, Debug)]
pub struct Reading {
    pub at: SystemTime,
    pub speed: u32,
    pub location: Location,
}

impl Reading {
    /// The log line: `<date>: <speed>, <location>`.
    pub fn log_line(&self) -> String {
        format!(
            "{}: {}, {}",
            humantime::format_rfc3339_millis(self.at),
            self.speed,
            self.location
        )
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often the owner polls the car.
    pub tick: Duration,
    pub print_every: Duration,
    pub raise_every: Duration,
    pub log: PathBuf,
    pub initial_speed: u32,
}

/// What a run did.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub logged: usize,
    pub first_speed: u32,
    pub last_speed: u32,
}

/// A request to the owner.
enum Request {
    SetSpeed(u32),
}

/// Runs the owner and the three consumers until `stop` resolves.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> std::io::Result<Summary> {
    let mut log = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log)?,
    );
    let mut car = Car::new(config.initial_speed);
    let first = Reading {
        at: SystemTime::now(),
        speed: car.get_speed(),
        location: car.get_location(),
    };
    let readings = Watch::new(first.clone());
    let stopping = Arc::new(Watch::new(false));
    let (requests, mut inbox) = mpsc::channel::<Request>(16);

    // The logger: every reading it sees, until the readings end.
    let mut logged_sub = readings.subscribe();
    let logger = tokio::spawn(async move {
        let mut logged = 0usize;
        writeln!(log, "{}", first.log_line())?;
        logged += 1;
        // Until `Closed`: the owner dropped the readings.
        while let Ok(reading) = logged_sub.changed().await {
            writeln!(log, "{}", reading.log_line())?;
            log.flush()?;
            logged += 1;
        }
        log.flush()?;
        Ok::<usize, std::io::Error>(logged)
    });

    // The printer: the latest reading every `print_every`.
    let mut printer_sub = readings.subscribe();
    let mut printer_stop = stopping.subscribe();
    let print_every = config.print_every;
    let printer = tokio::spawn(async move {
        let mut latest: Option<Arc<Reading>> = None;
        let mut ticks = tokio::time::interval(print_every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    while let Ok(Some(r)) = printer_sub.try_changed() {
                        latest = Some(r);
                    }
                    if let Some(r) = &latest {
                        println!("speed {} km/h at {}", r.speed, r.location);
                    }
                }
                _ = printer_stop.changed() => break,
            }
        }
    });

    // The speeder: one more km/h every `raise_every`, through the owner.
    let mut speeder_sub = readings.subscribe();
    let mut speeder_stop = stopping.subscribe();
    let raise_every = config.raise_every;
    let speed_now = config.initial_speed;
    let speeder = tokio::spawn(async move {
        let mut speed = speed_now;
        let mut ticks = tokio::time::interval(raise_every);
        ticks.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Ok(Some(r)) = speeder_sub.try_changed() {
                        speed = r.speed;
                    }
                    if requests.send(Request::SetSpeed(speed + 1)).await.is_err() {
                        break;
                    }
                    speed += 1;
                }
                _ = speeder_stop.changed() => break,
            }
        }
    });

    // The owner: polls the car, serves requests, publishes readings.
    let mut owner_stop = stopping.subscribe();
    let owner = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(config.tick);
        let mut last_speed = car.get_speed();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Some(Request::SetSpeed(kmh)) = inbox.recv() => car.set_speed(kmh),
                _ = owner_stop.changed() => break,
            }
            if car.is_connected() {
                last_speed = car.get_speed();
                readings.store(Reading {
                    at: SystemTime::now(),
                    speed: last_speed,
                    location: car.get_location(),
                });
            }
        }
        last_speed // dropping `readings` here ends the subscribers
    });

    stop.await;
    stopping.store(true);
    let last_speed = owner.await.map_err(std::io::Error::other)?;
    printer.await.map_err(std::io::Error::other)?;
    speeder.await.map_err(std::io::Error::other)?;
    let logged = logger.await.map_err(std::io::Error::other)??;
    Ok(Summary {
        logged,
        first_speed: config.initial_speed,
        last_speed,
    })
}
