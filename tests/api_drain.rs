//! Draining an API replica (SIGTERM, as a rolling update sends it): `/readyz` stops answering
//! 200 at once, new streams are refused, open streams get a `retry:` hint and end, and the
//! process exits; a client resuming on another replica with its `Last-Event-ID` sees the
//! answer with no gap and no duplicate.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use common::cluster::{create_chat, directive_message, Cluster};
use common::sse::ResumingReader;

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_replica_hands_its_streams_to_another() {
    let mut cluster = Cluster::start(2, 1).await;
    let draining = cluster.api(0);
    let message = directive_message("drain", json!({"tokens": 120, "tokens_per_second": 30}));
    let (chat_id, _) = create_chat(&draining, &message).await;

    // A stream on replica 0, some way into the answer.
    let mut events = draining
        .stream(&chat_id, None)
        .await
        .expect("open the stream");
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen
        .iter()
        .filter(|event: &&chatd_client::StreamEvent| event.event == "message_part")
        .count()
        < 5
    {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("read the stream");
        last_id = event.id.clone();
        seen.push(event);
    }

    // And a chat-list stream on it.
    let watch = cluster
        .http
        .get(format!("{}/api/v1/chats/watch", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("open the watch stream");
    assert_eq!(watch.status(), 200);
    let mut watch = watch.bytes_stream();

    let pid = cluster.apis[0].child.id() as i32;
    // SAFETY: signalling a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();

    // The open stream ends promptly (after the retry hint, which carries no data).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    last_id = event.id.clone();
                    seen.push(event);
                }
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream did not end within 5 s of SIGTERM"
    );
    let stream_ended = signalled.elapsed();
    let mut watch_text = String::new();
    let watch_ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = watch.next().await {
            watch_text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(
        watch_ended.is_ok(),
        "the watch stream did not end within 5 s of SIGTERM"
    );
    assert!(
        watch_text.contains("retry:"),
        "a reconnect hint: {watch_text:?}"
    );

    // Not ready any more: refused or 503, never 200.
    let ready = cluster
        .http
        .get(format!("{}/readyz", cluster.apis[0].url))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Ok(response) = ready {
        assert_eq!(response.status(), 503);
    }
    // New streams are not accepted by it either.
    assert!(draining.stream(&chat_id, Some(&last_id)).await.is_err());

    // The process exits on its own, successfully.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.apis[0].child.try_wait().expect("poll the replica") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not exit within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");

    // The client goes on from its last event id on replica 1.
    let mut resumed = ResumingReader::new(vec![cluster.api(1)], &chat_id, Some(&last_id));
    // The integrity checker judges the whole stream: what replica 0 sent, then the resume.
    for event in &seen {
        resumed.checker.observe(&event.event, &event.data);
    }
    resumed.checker.note_reconnect();
    resumed.until_turn_done(Duration::from_secs(30)).await;
    resumed.assert_intact();
    let mut all = seen.clone();
    all.extend(resumed.seen.iter().cloned());
    let text = common::sse::assert_contiguous(&all);
    let stored = common::cluster::assistant_texts(&cluster.api(1), &chat_id).await;
    assert_eq!(
        stored.last(),
        Some(&text),
        "streamed text equals the stored answer"
    );
    eprintln!("stream ended {stream_ended:?} after SIGTERM");
}
