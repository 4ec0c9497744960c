use std::time::Duration;

use serde_json::json;

use super::*;

fn step(to: &str) -> Step {
    Step::new(to, "work", json!({}))
}

#[test]
fn shapes_of_chain_group_and_chord() {
    let c = Workflow::chain([step("a"), step("b"), step("c")]);
    assert_eq!(c.kind(), WorkflowKind::Chain);
    assert_eq!(
        c.definition.steps.iter().map(Vec::len).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    let g = Workflow::group([step("a"), step("b")]);
    assert_eq!(g.definition.steps.len(), 1);
    assert_eq!(g.definition.steps[0].len(), 2);
    let ch = Workflow::chord([step("a"), step("b"), step("c")], step("d"));
    assert_eq!(
        ch.definition.steps.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 1]
    );
    // What is stored is what is read back.
    let text = serde_json::to_string(&ch.definition).unwrap();
    assert!(text.starts_with(r#"{"kind":"chord","steps":[["#), "{text}");
    let back: Definition = serde_json::from_str(&text).unwrap();
    assert_eq!(back, ch.definition);
}

#[test]
fn a_steps_payload_is_the_previous_result_with_its_own_keys_on_top() {
    let s = Step::new("b", "t", json!({"style": "short", "n": 2}));
    assert_eq!(s.payload_after(None), json!({"style": "short", "n": 2}));
    assert_eq!(
        s.payload_after(Some(&json!({"n": 1, "text": "x"}))),
        json!({"n": 2, "text": "x", "style": "short"})
    );
    assert_eq!(
        s.payload_after(Some(&json!([1, 2]))),
        json!({"input": [1, 2], "style": "short", "n": 2})
    );
}

#[test]
fn invalid_workflows_are_refused_with_what_to_do() {
    let e = Workflow::chain([]).validate("coder").unwrap_err();
    assert!(e.to_string().contains("1 to 100 steps"), "{e}");
    let e = Workflow::group([]).validate("coder").unwrap_err();
    assert!(e.to_string().contains("1 to 1000 parts"), "{e}");
    let e = Workflow::chain([step("bad agent")])
        .validate("coder")
        .unwrap_err();
    assert!(e.to_string().contains("step agent"), "{e}");
    let e = Workflow::chain([Step::new("a", "t", json!([1]))])
        .validate("coder")
        .unwrap_err();
    assert!(e.to_string().contains("step 0 part 0"), "{e}");
    let e = Workflow::chord([step("a")], Step::new("b", "t", json!({"results": 1})))
        .validate("coder")
        .unwrap_err();
    assert!(e.to_string().contains("\"results\""), "{e}");
    let e = Workflow::chain([step("a")])
        .with_reply_to("agent:percy:results")
        .validate("coder")
        .unwrap_err();
    assert!(
        e.to_string().contains("stream of the starting agent"),
        "{e}"
    );
    let e = Workflow::chain([step("a")])
        .keep_for(Duration::from_millis(10))
        .validate("coder")
        .unwrap_err();
    assert!(e.to_string().contains("at least a second"), "{e}");
    let e = Workflow::chain([step("a")]).validate("").unwrap_err();
    assert!(e.to_string().contains("from_agent"), "{e}");
    Workflow::chain([step("a")])
        .with_reply_to("agent:coder:results")
        .validate("coder")
        .unwrap();
}

#[test]
fn ids_are_32_hex_digits_and_name_their_own_slot() {
    let id = WorkflowId::new();
    assert_eq!(id.as_str().len(), 32);
    assert_eq!(id.as_str().parse::<WorkflowId>().unwrap(), id);
    assert_eq!(id.key(), format!("fabric:workflow:{{{id}}}"));
    for bad in ["", "xyz", "ABCDEF0123456789ABCDEF0123456789", "0123}"] {
        assert!(bad.parse::<WorkflowId>().is_err(), "{bad}");
    }
}

#[test]
fn errors_name_the_failed_step_and_its_reason() {
    let f = StepFailure {
        step: 1,
        part: 0,
        to_agent: "percy".into(),
        message_type: "summarize".into(),
        reason: "permanent_error".into(),
        error: "cannot".into(),
        attempts: 1,
        message_id: "msg:1".into(),
    };
    let id: WorkflowId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let e: Error = WorkflowError::Failed {
        id,
        failure: Box::new(f),
    }
    .into();
    let text = e.to_string();
    assert!(
        text.contains("step 1 part 0 (summarize at agent percy) failed: permanent_error: cannot"),
        "{text}"
    );
    assert!(
        Error::from(WorkflowError::NeedsDirectMode)
            .to_string()
            .contains("direct mode")
    );
    // A part's outcome reads as the worker records it.
    let p: PartOutcome =
        serde_json::from_value(json!({"status": "succeeded", "result": {"x": 1}})).unwrap();
    assert_eq!(
        p,
        PartOutcome::Succeeded {
            result: json!({"x": 1})
        }
    );
    let p: PartOutcome = serde_json::from_value(json!({"status": "failed", "step": 0, "part": 2,
        "to_agent": "a", "message_type": "t", "reason": "expired", "error": "late"}))
    .unwrap();
    assert!(matches!(p, PartOutcome::Failed(f) if f.part == 2 && f.reason == "expired"));
}
