//! Where ARM is harsh and the operator must survive it: token-bucket throttling (per subscription,
//! principal and operation type, plus the global subscription bucket), and a second writer that
//! changes a site between a client's read and its write.

mod common;

use azure_sim::{
    AzureSim, AzureSimOptions, Bucket, Fault, FaultKind, ReadOp, SecondWriter, SiteId, Throttling,
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
const OTHER_CLIENT: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
const OTHER_SECRET: &str = "other-secret";

fn site() -> SiteId {
    SiteId::new(SUB, "rg-web", "contoso-web")
}

async fn start_with(throttling: Throttling) -> AzureSim {
    install_crypto_provider();
    let sim = AzureSim::start(AzureSimOptions {
        clients: vec![
            (DEFAULT_CLIENT_ID.into(), DEFAULT_CLIENT_SECRET.into()),
            (OTHER_CLIENT.into(), OTHER_SECRET.into()),
        ],
        throttling,
        ..Default::default()
    })
    .await
    .expect("sim starts");
    sim.add_site(site(), settings(&[("A", "1")]));
    sim
}

fn header<'r>(r: &'r Reply, name: &str) -> Option<&'r str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

fn remaining(r: &Reply, kind: &str) -> (Option<u64>, Option<u64>) {
    let n = |name: String| header(r, &name).map(|v| v.parse().unwrap());
    (
        n(format!("x-ms-ratelimit-remaining-subscription-{kind}")),
        n(format!(
            "x-ms-ratelimit-remaining-subscription-global-{kind}"
        )),
    )
}

#[tokio::test]
async fn arms_limits_are_the_default_and_every_response_says_what_remains() {
    let sim = start().await;
    assert_eq!(sim.throttling(), Throttling::ARM);
    assert_eq!(
        Throttling::ARM,
        Throttling {
            reads: Bucket::new(250, 25.0),
            writes: Bucket::new(200, 10.0),
            deletes: Bucket::new(200, 10.0),
            global_factor: 15,
        }
    );
    sim.add_site(site(), settings(&[("A", "1")]));
    let arm = Arm::new(&sim).await;

    // A GET is a read: 250 per principal, 15 × 250 for the subscription.
    let get = arm.get_site(&site()).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(remaining(&get, "reads"), (Some(249), Some(3749)));
    assert_eq!(remaining(&get, "writes"), (None, None));

    // Every other method but DELETE is a write, the app-settings list (a POST) included.
    let list = arm.list_settings(&site()).await;
    assert_eq!(remaining(&list, "writes"), (Some(199), Some(2999)));
    assert_eq!(remaining(&list, "reads"), (None, None));
    // Later values depend on how much refilled meanwhile (10 writes/s), so only their range is
    // asserted.
    let put = arm
        .put_settings(&site(), json!({"properties": {"A": "2"}}))
        .await;
    let patch = arm.patch_site(&site(), json!({"properties": {}})).await;
    for r in [&put, &patch] {
        let (own, global) = remaining(r, "writes");
        assert!((190..=199).contains(&own.unwrap()), "{own:?}");
        assert!((2990..=2999).contains(&global.unwrap()), "{global:?}");
    }

    // DELETE has its own bucket (the sim has no DELETE endpoint: 405, but ARM counted it first).
    let path = format!("{}?api-version={API_VERSION}", site().resource_id());
    let delete = arm.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(remaining(&delete, "deletes"), (Some(199), Some(2999)));

    // Requests the resource provider refuses were still counted by ARM.
    let missing = arm
        .get_site(&SiteId::new(SUB, "rg-web", "no-such-site"))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let (own, global) = remaining(&missing, "reads");
    assert!(
        own.unwrap() < 250 && global.unwrap() < 3750,
        "{own:?} {global:?}"
    );

    // An unauthenticated request never reaches the buckets.
    let anonymous = arm
        .http
        .get(format!("{}{path}", sim.arm_endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("x-ms-ratelimit")));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_empty_bucket_answers_429_with_retry_after_until_it_refills() {
    let sim = start_with(Throttling {
        writes: Bucket::new(2, 1.0),
        ..Throttling::ARM
    })
    .await;
    let arm = Arm::new(&sim).await;
    for left in [1, 0] {
        let put = arm
            .put_settings(&site(), json!({"properties": {"A": "2"}}))
            .await;
        assert_eq!(put.status, StatusCode::OK);
        assert_eq!(remaining(&put, "writes").0, Some(left));
    }
    let throttled = arm
        .put_settings(&site(), json!({"properties": {"A": "lost"}}))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&throttled, "retry-after"), Some("1"));
    let (own, global) = remaining(&throttled, "writes");
    assert_eq!(own, Some(0));
    assert!(
        global.unwrap() >= 28,
        "the subscription's bucket (30) is not what ran out"
    );
    assert_eq!(arm_code(&throttled.body), "SubscriptionRequestsThrottled");
    let message = arm_message(&throttled.body);
    assert!(
        message.starts_with(&format!(
            "Number of 'write' requests for subscription '{SUB}' actor '"
        )),
        "{message}"
    );
    assert!(
        message
            .contains("Please try again after '1' seconds after additional tokens are available."),
        "{message}"
    );
    assert_eq!(
        sim.app_settings(&site()).unwrap()["A"],
        "2",
        "a throttled write changes nothing"
    );
    // Reads have their own bucket.
    assert_eq!(arm.get_site(&site()).await.status, StatusCode::OK);

    // A second later there is one token again (the throttled request took none): one write
    // passes, the next is throttled again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = arm
        .put_settings(&site(), json!({"properties": {"A": "3"}}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let next = arm
        .put_settings(&site(), json!({"properties": {"A": "4"}}))
        .await;
    assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sim.app_settings(&site()).unwrap()["A"], "3");

    // A slow refill asks for a longer wait: one token every 4 s.
    sim.set_throttling(Throttling::uniform(1, 0.25)).unwrap();
    assert_eq!(
        arm.get_site(&site()).await.status,
        StatusCode::OK,
        "reset to full"
    );
    let slow = arm.get_site(&site()).await;
    assert_eq!(slow.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&slow, "retry-after"), Some("4"));
    assert!(arm_message(&slow.body).starts_with("Number of 'read' requests"));
    assert!(sim.set_throttling(Throttling::uniform(0, 1.0)).is_err());

    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429, 200, 429]);
    let waits: Vec<Option<u64>> = sim.requests().iter().map(|r| r.retry_after).collect();
    assert_eq!(
        waits,
        [None, None, Some(1), None, None, Some(1), None, Some(4)],
        "the log keeps each Retry-After"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn principals_have_their_own_buckets_and_share_the_subscription_wide_one() {
    // Per principal: 2 writes; the whole subscription: 3 × 2.
    let sim = start_with(Throttling {
        global_factor: 3,
        ..Throttling::uniform(2, 0.01)
    })
    .await;
    let other_site = SiteId::new("another-subscription", "rg", "app");
    sim.add_site(other_site.clone(), settings(&[]));
    let a = Arm::for_client(&sim, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET).await;
    let a2 = Arm::for_client(&sim, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET).await;
    let b = Arm::for_client(&sim, OTHER_CLIENT, OTHER_SECRET).await;

    assert_eq!(a.list_settings(&site()).await.status, StatusCode::OK);
    // A second token of the same principal draws from the same bucket.
    assert_eq!(a2.list_settings(&site()).await.status, StatusCode::OK);
    let a_out = a.list_settings(&site()).await;
    assert_eq!(a_out.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(remaining(&a_out, "writes"), (Some(0), Some(4)));

    // Another principal is not throttled for it.
    let b1 = b.list_settings(&site()).await;
    assert_eq!(b1.status, StatusCode::OK);
    assert_eq!(remaining(&b1, "writes"), (Some(1), Some(3)));
    // Nor is the same principal in another subscription.
    assert_eq!(a.list_settings(&other_site).await.status, StatusCode::OK);

    // The subscription-wide bucket catches the principals together: with factor 1 it is as
    // small as one principal's.
    sim.set_throttling(Throttling {
        global_factor: 1,
        ..Throttling::uniform(2, 0.01)
    })
    .unwrap();
    for _ in 0..2 {
        assert_eq!(a.list_settings(&site()).await.status, StatusCode::OK);
    }
    let b_out = b.list_settings(&site()).await;
    assert_eq!(b_out.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        remaining(&b_out, "writes"),
        (Some(2), Some(0)),
        "b's own bucket is full, the subscription's is empty"
    );
    assert!(
        header(&b_out, "retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_faults_sit_behind_the_buckets() {
    let sim = start_with(Throttling {
        writes: Bucket::new(3, 0.01),
        ..Throttling::ARM
    })
    .await;
    let arm = Arm::new(&sim).await;
    sim.inject(
        Fault::new(
            "/config/appsettings",
            FaultKind::TooManyRequests {
                retry_after_secs: 7,
            },
        )
        .method("PUT"),
    );
    sim.inject(Fault::new("appsettings/list", FaultKind::ServerError).times(5));
    // A scripted 429 or 500 passed ARM's buckets: it spent a token and says what remains.
    let scripted = arm
        .put_settings(&site(), json!({"properties": {"B": "2"}}))
        .await;
    assert_eq!(scripted.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&scripted, "retry-after"), Some("7"));
    assert_eq!(remaining(&scripted, "writes").0, Some(2));
    let failed = arm.list_settings(&site()).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(remaining(&failed, "writes").0, Some(1));
    assert_eq!(
        arm.list_settings(&site()).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // Once the bucket is empty ARM answers before the scripted fault is reached, so it is kept.
    let bucket = arm.list_settings(&site()).await;
    assert_eq!(bucket.status, StatusCode::TOO_MANY_REQUESTS);
    assert_ne!(header(&bucket, "retry-after"), Some("7"));
    assert_eq!(sim.requests()[0].retry_after, Some(7));
    assert_eq!(
        sim.requests()[3].retry_after,
        Some(100),
        "one token per 100 s"
    );
    sim.set_throttling(Throttling::ARM).unwrap();
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..4 {
            s.push(arm.list_settings(&site()).await.status.as_u16());
        }
        s
    };
    assert_eq!(
        statuses,
        [500, 500, 500, 200],
        "three scripted failures were left"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_throttling_options_are_refused_at_start() {
    install_crypto_provider();
    for throttling in [
        Throttling::uniform(0, 1.0),
        Throttling::uniform(1, 0.0),
        Throttling {
            global_factor: 0,
            ..Throttling::ARM
        },
    ] {
        let started = AzureSim::start(AzureSimOptions {
            throttling,
            ..Default::default()
        })
        .await;
        assert!(started.is_err(), "{throttling:?}");
    }
}

#[tokio::test]
async fn a_second_writer_between_read_and_write_loses_its_change_to_the_stale_put() {
    let sim = start_with(Throttling::ARM).await;
    let arm = Arm::new(&sim).await;
    sim.add_second_writer(SecondWriter::set_app_setting(
        site(),
        "TERRAFORM_ADDED",
        "yes",
    ));

    // The read is answered from before the edit...
    let read = arm.list_settings(&site()).await;
    assert_eq!(read.body["properties"], json!({"A": "1"}));
    // ...and the edit is in place before the reader can send anything else.
    assert_eq!(
        sim.app_settings(&site()).unwrap(),
        settings(&[("A", "1"), ("TERRAFORM_ADDED", "yes")])
    );
    let edits = sim.second_writer_edits();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].after, ReadOp::ListAppSettings);
    assert_eq!(edits[0].reader, DEFAULT_CLIENT_ID);
    assert_eq!(
        edits[0].app_settings,
        settings(&[("A", "1"), ("TERRAFORM_ADDED", "yes")])
    );

    // A write based on the stale read replaces the whole set: no If-Match, last writer wins.
    let mut props = read.body["properties"].as_object().unwrap().clone();
    props.insert("WEBSITE_DNS_SERVER".into(), json!("10.240.0.53"));
    let put = arm
        .put_settings(&site(), json!({"properties": props}))
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        sim.app_settings(&site()).unwrap(),
        settings(&[("A", "1"), ("WEBSITE_DNS_SERVER", "10.240.0.53")]),
        "the second writer's change is lost"
    );
    let log = sim.requests();
    assert!(log[0].at < edits[0].at && edits[0].at < log[1].at);

    // Used up: the next read is not followed by an edit.
    arm.list_settings(&site()).await;
    assert_eq!(sim.second_writer_edits().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn second_writers_fire_n_times_for_matching_reads_only() {
    let sim = start_with(Throttling {
        reads: Bucket::new(1, 0.01),
        ..Throttling::ARM
    })
    .await;
    sim.add_site(site().with_slot("staging"), settings(&[]));
    let operator = Arm::new(&sim).await;
    let other = Arm::for_client(&sim, OTHER_CLIENT, OTHER_SECRET).await;
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = n.clone();
    sim.add_second_writer(
        SecondWriter::new(site(), move |e| {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            e.app_settings.insert("PIPELINE_RUN".into(), i.to_string());
        })
        .reader(DEFAULT_CLIENT_ID)
        .times(2),
    );
    sim.add_second_writer(
        SecondWriter::set_dns_field(site(), "dnsServers", json!(["10.9.9.9"]))
            .after(ReadOp::GetSite),
    );

    // Another client's read, a read of the slot, and a failed read do not trigger it.
    other.list_settings(&site()).await;
    operator.list_settings(&site().with_slot("staging")).await;
    operator
        .list_settings(&SiteId::new(SUB, "rg-web", "missing"))
        .await;
    assert!(sim.second_writer_edits().is_empty());
    for _ in 0..3 {
        operator.list_settings(&site()).await;
    }
    assert_eq!(sim.app_settings(&site()).unwrap()["PIPELINE_RUN"], "2");
    assert_eq!(sim.second_writer_edits().len(), 2);

    // After a site GET: the answer has no dnsServers, the site has them right after.
    let got = operator.get_site(&site()).await;
    assert_eq!(got.body["properties"]["dnsConfiguration"], json!({}));
    assert_eq!(
        sim.dns_configuration(&site()).unwrap(),
        json!({"dnsServers": ["10.9.9.9"]})
    );
    let edits = sim.second_writer_edits();
    assert_eq!(edits.len(), 3);
    assert_eq!(edits[2].after, ReadOp::GetSite);
    assert_eq!(
        edits[2].dns_configuration["dnsServers"],
        json!(["10.9.9.9"])
    );

    // A throttled read is not answered, so nothing fires after it.
    sim.add_second_writer(SecondWriter::remove_app_setting(site(), "A").after(ReadOp::GetSite));
    let throttled = operator.get_site(&site()).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(sim.app_settings(&site()).unwrap().contains_key("A"));
    sim.clear_second_writers();
    sim.set_throttling(Throttling::ARM).unwrap();
    operator.get_site(&site()).await;
    assert!(
        sim.app_settings(&site()).unwrap().contains_key("A"),
        "cleared"
    );
    assert_eq!(sim.second_writer_edits().len(), 3);
    sim.shutdown().await;
}
