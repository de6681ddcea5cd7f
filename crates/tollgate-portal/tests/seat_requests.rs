//! The customer's "More seats" form: it offers the account's active
//! entitlements with seats, files through the REST API, and the request
//! reads "More seats: 5 for Studio Pro (acme-pro)" on the customer's page
//! and in the vendor's queue.

mod common;

use common::{commit, serve, test_config, Browser, CUSTOMER, PASSWORD, VENDOR};
use tollgate_model::*;
use tollgate_origin::{EntitlementChange, Op};

fn named_seats(count: u32) -> Op {
    Op::ChangeEntitlement {
        id: EntitlementId::try_from("acme-pro".to_string()).unwrap(),
        change: EntitlementChange::SetSeats(Some(Seats {
            count,
            mode: SeatMode::Named {
                assigned: Default::default(),
            },
        })),
    }
}

#[tokio::test]
async fn a_customer_asks_for_more_seats_and_the_vendor_sees_it_in_words() {
    let portal = serve(test_config()).await;
    let customer = Browser::new(&portal.base);
    assert_eq!(customer.sign_in(CUSTOMER, PASSWORD).await.status, 303);

    tracing::info!("Without seats on any entitlement, the form is not offered.");
    let page = customer.get("/portal/a/acme/requests").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("More seats"), "{}", page.body);

    commit(&portal.store, named_seats(5)).await;
    let page = customer.get("/portal/a/acme/requests").await;
    assert_eq!(page.status, 200);
    for expected in [
        "<h2 id=\"seats-h\">More seats</h2>",
        "<label for=\"seats-entitlement\">",
        "<label for=\"seats-more\">How many more</label>",
        "<label for=\"seats-justification\">",
        "max=\"10000\"",
        "<option value=\"acme-pro\">Studio Pro (acme-pro): 5 named seats now</option>",
    ] {
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
    }
    assert!(
        !page.body.contains("globex-pro"),
        "another account's entitlements are not offered"
    );
    let csrf = page.csrf();

    tracing::info!("Out-of-bounds counts and another account's entitlement are refused.");
    for (entitlement, more, status) in [
        ("acme-pro", "0", 400),
        ("acme-pro", "10001", 400),
        ("acme-pro", "", 400),
        ("", "5", 400),
        ("globex-pro", "5", 404),
    ] {
        let answer = customer
            .post(
                "/portal/a/acme/requests",
                &[
                    ("csrf", &csrf),
                    ("target", "seats"),
                    ("entitlement", entitlement),
                    ("more", more),
                    ("justification", "the team grew"),
                ],
            )
            .await;
        assert_eq!(
            answer.status, status,
            "{entitlement} {more}: {}",
            answer.body
        );
    }

    tracing::info!("A request within bounds is filed and shown in words.");
    let answer = customer
        .post(
            "/portal/a/acme/requests",
            &[
                ("csrf", &csrf),
                ("target", "seats"),
                ("entitlement", "acme-pro"),
                ("more", "5"),
                ("justification", "the team grew"),
            ],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let page = customer.get("/portal/a/acme/requests").await;
    assert!(
        page.body
            .contains("More seats: 5 for Studio Pro (acme-pro)"),
        "{}",
        page.body
    );
    assert_eq!(
        page.body.matches("More seats: ").count(),
        1,
        "only the request within bounds was filed"
    );

    tracing::info!("The vendor's queue words it the same way.");
    let vendor = Browser::new(&portal.base);
    assert_eq!(vendor.sign_in(VENDOR, PASSWORD).await.status, 303);
    let queue = vendor.get("/portal/vendor/requests").await;
    assert_eq!(queue.status, 200);
    assert!(
        queue
            .body
            .contains("More seats: 5 for Studio Pro (acme-pro)"),
        "{}",
        queue.body
    );
}
