//! Without Docker, the container backend fails with an error that says so.
//! Alone in its own test binary because it changes the process environment.

// A Unix socket path as DOCKER_HOST: Unix only.
#[cfg(unix)]
#[tokio::test]
async fn container_backend_without_docker_says_what_to_do() {
    use kafka_trace_harness::{Backend, Broker, ContainerImage, Error};

    let socket = std::env::temp_dir().join(format!("no-docker-{}.sock", std::process::id()));
    // SAFETY: this binary's only test; no other thread reads the environment.
    unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display())) };

    let err = Broker::builder()
        .backend(Backend::Container(ContainerImage::local_harness()))
        .start()
        .await
        .expect_err("no Docker engine listens on that socket");

    let message = err.to_string();
    assert!(matches!(err, Error::NoDocker { .. }), "{err:?}");
    assert!(message.contains("needs a Docker engine"), "{message}");
    assert!(
        message.contains("KAFKA_TRACE_HARNESS_BROKER=embedded"),
        "{message}"
    );
}
