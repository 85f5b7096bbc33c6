//! Wake-ups across replicas: one dedicated connection per process `LISTEN`s on
//! [`taskrunner_store::WAKEUP_CHANNEL`] and fans notifications out in-process. The connection
//! is re-established after a failure (1 s later); wake-ups sent meanwhile are lost, which is why
//! replicas also poll `claim` (the polling fallback).

use std::time::Duration;

use futures::StreamExt;
use taskrunner_store::{WAKEUP_CHANNEL, WakeHub, Wakeup};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::tls::Tls;

/// Pause before reconnecting a listener whose connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Starts the listener task; abort the handle to stop it.
pub(crate) fn spawn_listener(
    config: tokio_postgres::Config,
    tls: Tls,
    hub: WakeHub,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen_once(&config, &tls, &hub).await {
                tracing::warn!(error = %e, "store: wake-up listener lost its connection");
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    })
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &Tls,
    hub: &WakeHub,
) -> Result<(), String> {
    let (client, mut connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let forward = hub.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => match Wakeup::parse(n.payload()) {
                    Some(w) => forward.send(&w.tenant, &w.run_id),
                    None => tracing::debug!(payload = n.payload(), "store: foreign notification"),
                },
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "connection closed".to_owned()
    });
    if let Err(e) = client
        .batch_execute(&format!("LISTEN {WAKEUP_CHANNEL}"))
        .await
    {
        driver.abort();
        return Err(e.to_string());
    }
    // Keep the client alive while the connection delivers notifications.
    let reason = driver.await.map_err(|e| e.to_string())?;
    drop(client);
    Err(reason)
}
