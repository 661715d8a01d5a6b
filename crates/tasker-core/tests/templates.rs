//! Template loading against the files users will write: every example in `examples/templates/`
//! loads, and every file in `tests/fixtures/invalid_templates/` is rejected with the right
//! variant and a message that names the culprit.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use tasker_core::context::ContextValidator;
use tasker_core::template::{Position, TaskTemplate, TemplateError};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates")
}

fn load_example(name: &str) -> TaskTemplate {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    TaskTemplate::from_yaml_str(&text).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// Loads an invalid fixture and returns its error and the error's message.
fn reject(name: &str) -> (TemplateError, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/invalid_templates")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    match TaskTemplate::from_yaml_str(&text) {
        Ok(template) => panic!("{name} should be rejected but loaded: {template:?}"),
        Err(error) => {
            let message = error.to_string();
            (error, message)
        }
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
    }
}

fn step_names(template: &TaskTemplate, indices: &[usize]) -> Vec<String> {
    indices
        .iter()
        .map(|&index| template.steps()[index].name.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Examples

#[test]
fn every_example_template_is_valid_in_every_environment() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let template = TaskTemplate::from_yaml_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        for environment in template.environments().keys() {
            let applied = template.for_environment(environment);
            assert_eq!(applied.steps().len(), template.steps().len());
        }
        loaded += 1;
    }
    assert!(
        loaded >= 6,
        "expected at least 6 example templates, found {loaded}"
    );
}

#[test]
fn order_fulfillment_matches_the_seed() {
    let template = load_example("order_fulfillment.yaml");
    assert_eq!(template.namespace(), "order_fulfillment");
    assert_eq!(template.name(), "order_fulfillment");
    assert_eq!(template.version().to_string(), "1.0.0");
    let names: Vec<&str> = template.steps().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "validate_order",
            "reserve_inventory",
            "process_payment",
            "ship_order"
        ]
    );
    let limits: Vec<u32> = template.steps().iter().map(|s| s.retry_limit).collect();
    assert_eq!(limits, [1, 3, 2, 5]);
    assert!(!template.steps()[0].retryable);
    assert!(template.steps()[1..].iter().all(|s| s.retryable));
    assert_eq!(
        template.steps()[3].handler_class,
        "OrderFulfillment::ShipOrderHandler"
    );

    let dag = template.dag();
    assert_eq!(step_names(&template, &dag.roots()), ["validate_order"]);
    assert_eq!(step_names(&template, &dag.leaves()), ["ship_order"]);
    assert_eq!(
        step_names(&template, dag.parents(3)),
        ["reserve_inventory", "process_payment"]
    );
    assert_eq!(
        step_names(&template, &dag.ancestors(3)),
        ["validate_order", "reserve_inventory", "process_payment"]
    );

    let production = template.for_environment("production");
    assert_eq!(
        production.step("process_payment").unwrap().handler_config["gateway"],
        json!("live")
    );
    assert_eq!(
        production.step("process_payment").unwrap().handler_config["capture"],
        json!(true)
    );
}

#[test]
fn order_fulfillment_context_schema_checks_contexts() {
    let template = load_example("order_fulfillment.yaml");
    let validator = ContextValidator::for_template(&template);
    let good = json!({
        "order_id": 12345,
        "customer": { "email": "ada@example.com" },
        "items": [{ "sku": "BOOK-1", "quantity": 2 }]
    });
    assert_eq!(validator.validate(&good), Ok(()));

    let bad = json!({ "order_id": "12345", "customer": { "email": 7 }, "items": [] });
    let error = validator.validate(&bad).unwrap_err();
    let mut pointers: Vec<&str> = error
        .violations
        .iter()
        .map(|v| v.pointer.as_str())
        .collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        ["/customer/email", "/items", "/order_id"],
        "{error}"
    );
}

#[test]
fn shape_examples_have_the_documented_structure() {
    let linear = load_example("linear.yaml");
    assert_eq!(linear.steps().len(), 4);
    assert_eq!(
        step_names(&linear, linear.dag().topological_order()),
        ["step_1", "step_2", "step_3", "step_4"]
    );
    assert_eq!(linear.dag().descendants(0), [1, 2, 3]);

    let diamond = load_example("diamond.yaml");
    assert_eq!(step_names(&diamond, &diamond.dag().roots()), ["a"]);
    assert_eq!(step_names(&diamond, &diamond.dag().leaves()), ["d"]);
    assert_eq!(step_names(&diamond, diamond.dag().parents(3)), ["b", "c"]);

    let merge = load_example("parallel_merge.yaml");
    assert!(merge.dag().roots().len() >= 3);
    assert_eq!(merge.dag().leaves().len(), 1);
    let merge_step = merge.dag().leaves()[0];
    assert_eq!(merge.dag().parents(merge_step), merge.dag().roots());

    let tree = load_example("tree.yaml");
    assert_eq!(tree.dag().roots().len(), 1);
    assert_eq!(tree.dag().children(0).len(), 2);
    assert_eq!(tree.dag().leaves().len(), 4);
    assert_eq!(tree.dag().descendants(0).len(), 6);

    let mixed = load_example("mixed_dag.yaml");
    let dag = mixed.dag();
    assert!(mixed.steps().len() >= 7);
    assert!(
        (0..dag.len()).any(|step| dag.children(step).len() >= 2),
        "has a fan-out"
    );
    assert!(
        (0..dag.len()).any(|step| dag.parents(step).len() >= 2),
        "has a fan-in"
    );
    // A chain: `score` sits at the end of four steps, each with a single parent.
    let score = mixed.step_index("score").unwrap();
    let chain = dag.ancestors(score);
    assert_eq!(chain.len(), 3);
    assert!(
        chain
            .iter()
            .chain([&score])
            .all(|&step| dag.parents(step).len() <= 1)
    );
    // `publish` waits, directly or not, for every other step.
    let publish = mixed.step_index("publish").unwrap();
    assert_eq!(dag.ancestors(publish).len(), mixed.steps().len() - 1);

    for template in [&linear, &diamond, &merge, &tree, &mixed] {
        assert!(
            template
                .steps()
                .iter()
                .all(|s| s.handler_class == "tasker.test"),
            "{}",
            template.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rejections: one fixture per kind of problem.

#[test]
fn invalid_yaml_reports_line_and_column() {
    let (error, message) = reject("invalid_yaml.yaml");
    let TemplateError::Yaml { position, .. } = error else {
        panic!("wrong variant: {message}");
    };
    assert_eq!(position.line, 8, "{message}");
    assert_eq!(position.column, 18, "{message}");
    assert_mentions(
        &message,
        &["invalid YAML", "line 8, column 18", "flow sequence"],
    );
}

#[test]
fn empty_document_is_rejected() {
    let (error, message) = reject("empty_document.yaml");
    assert!(matches!(error, TemplateError::Yaml { .. }), "{message}");
    assert_mentions(&message, &["empty"]);
}

#[test]
fn missing_field_names_the_field_and_the_step() {
    let (error, message) = reject("missing_handler_class.yaml");
    assert_eq!(
        error,
        TemplateError::MissingField {
            field: "handler_class".to_owned(),
            location: "step `reserve_inventory` (steps[1])".to_owned(),
            position: Some(Position { line: 8, column: 5 }),
        },
        "{message}"
    );
    assert_mentions(
        &message,
        &["`handler_class`", "reserve_inventory", "line 8"],
    );
}

#[test]
fn missing_top_level_field_is_named() {
    let (error, message) = reject("missing_version.yaml");
    assert!(
        matches!(&error, TemplateError::MissingField { field, .. } if field == "version"),
        "{message}"
    );
    assert_mentions(&message, &["the template", "`version`"]);
}

#[test]
fn unknown_step_key_names_key_step_and_position() {
    let (error, message) = reject("unknown_step_key.yaml");
    let TemplateError::UnknownKey {
        key,
        location,
        expected,
        position,
    } = error
    else {
        panic!("wrong variant: {message}");
    };
    assert_eq!(key, "retry_limt");
    assert_eq!(location, "step `validate_order` (steps[0])");
    assert!(expected.contains("`retry_limit`"), "{expected}");
    assert_eq!(position, Some(Position { line: 8, column: 5 }));
    assert_mentions(
        &message,
        &[
            "unknown key `retry_limt`",
            "validate_order",
            "line 8, column 5",
        ],
    );
}

#[test]
fn unknown_template_key_is_named() {
    let (error, message) = reject("unknown_template_key.yaml");
    assert!(
        matches!(&error, TemplateError::UnknownKey { key, .. } if key == "descripton"),
        "{message}"
    );
    assert_mentions(
        &message,
        &["`descripton`", "the template", "`description`", "line 5"],
    );
}

#[test]
fn unknown_override_key_names_environment_and_step() {
    let (error, message) = reject("unknown_override_key.yaml");
    assert!(
        matches!(&error, TemplateError::UnknownKey { key, .. } if key == "retry_limits"),
        "{message}"
    );
    assert_mentions(
        &message,
        &[
            "`retry_limits`",
            "step `pay`",
            "environment `production`",
            "line 12",
        ],
    );
}

#[test]
fn duplicate_key_is_named() {
    let (error, message) = reject("duplicate_key.yaml");
    assert!(
        matches!(&error, TemplateError::DuplicateKey { key, .. } if key == "timeout_ms"),
        "{message}"
    );
    assert_mentions(
        &message,
        &["duplicate key `timeout_ms`", "steps[0]", "line "],
    );
}

#[test]
fn wrong_type_names_field_and_expectation() {
    let (error, message) = reject("wrong_type.yaml");
    let TemplateError::InvalidValue {
        position: Some(position),
        ..
    } = &error
    else {
        panic!("wrong variant: {message}");
    };
    assert_eq!(position.line, 8);
    assert_mentions(
        &message,
        &[
            "`retry_limit`",
            "step `charge`",
            "\"three\"",
            "whole number",
        ],
    );
}

#[test]
fn duplicate_step_names_both_positions() {
    let (error, message) = reject("duplicate_step.yaml");
    assert_eq!(
        error,
        TemplateError::DuplicateStep {
            name: "ship".to_owned(),
            first: 0,
            second: 2
        }
    );
    assert_mentions(&message, &["`ship`", "steps[0]", "steps[2]"]);
}

#[test]
fn unknown_dependency_names_both_steps() {
    let (error, message) = reject("unknown_dependency.yaml");
    assert_eq!(
        error,
        TemplateError::UnknownDependency {
            step: "ship_order".to_owned(),
            dependency: "process_paymnet".to_owned()
        }
    );
    assert_mentions(&message, &["`ship_order`", "`process_paymnet`"]);
}

#[test]
fn self_dependency_names_the_step() {
    let (error, message) = reject("self_dependency.yaml");
    assert_eq!(
        error,
        TemplateError::SelfDependency {
            step: "loop".to_owned()
        }
    );
    assert_mentions(&message, &["`loop` depends on itself"]);
}

#[test]
fn duplicate_dependency_names_step_and_dependency() {
    let (error, message) = reject("duplicate_dependency.yaml");
    assert_eq!(
        error,
        TemplateError::DuplicateDependency {
            step: "b".to_owned(),
            dependency: "a".to_owned()
        }
    );
    assert_mentions(&message, &["`b`", "`a`", "more than once"]);
}

#[test]
fn cycle_prints_its_path() {
    let (error, message) = reject("cycle.yaml");
    assert_eq!(
        error,
        TemplateError::Cycle {
            path: ["a", "b", "c", "a"].map(String::from).to_vec()
        }
    );
    assert_mentions(&message, &["dependency cycle: a -> b -> c -> a"]);
    assert!(!message.contains("start"), "{message}");
}

#[test]
fn empty_steps_is_rejected() {
    let (error, message) = reject("empty_steps.yaml");
    assert_eq!(error, TemplateError::EmptySteps);
    assert_mentions(&message, &["no steps"]);
}

#[test]
fn invalid_context_schema_points_into_the_schema() {
    let (error, message) = reject("invalid_context_schema.yaml");
    let TemplateError::InvalidContextSchema { pointer, .. } = &error else {
        panic!("wrong variant: {message}");
    };
    assert_eq!(pointer, "/properties/order_id/type");
    assert_mentions(
        &message,
        &["context_schema", "\"integr\"", "/properties/order_id/type"],
    );
}

#[test]
fn remote_schema_reference_is_rejected_without_fetching() {
    let (error, message) = reject("context_schema_remote_ref.yaml");
    assert!(
        matches!(error, TemplateError::InvalidContextSchema { .. }),
        "{message}"
    );
    assert_mentions(
        &message,
        &["https://example.invalid/schemas/order.json", "$defs"],
    );
}

#[test]
fn zero_retry_limit_is_rejected() {
    let (error, message) = reject("zero_retry_limit.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidRetryLimit { value: 0, location, .. } if location == "step `charge`"),
        "{message}"
    );
    assert_mentions(&message, &["retry_limit 0", "step `charge`", "at least 1"]);
}

#[test]
fn zero_timeout_is_rejected() {
    let (error, message) = reject("zero_timeout.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidTimeout { value: 0, location, .. } if location == "step `charge`"),
        "{message}"
    );
    assert_mentions(&message, &["timeout_ms 0", "step `charge`"]);
}

#[test]
fn backoff_multiplier_below_one_is_rejected() {
    let (error, message) = reject("backoff_multiplier_below_one.yaml");
    assert!(
        matches!(error, TemplateError::InvalidBackoff { .. }),
        "{message}"
    );
    assert_mentions(
        &message,
        &["step `charge`", "multiplier is 0.5", "at least 1"],
    );
}

#[test]
fn backoff_jitter_out_of_range_is_rejected() {
    let (error, message) = reject("backoff_jitter_out_of_range.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidBackoff { location, .. } if location == "the template"),
        "{message}"
    );
    assert_mentions(&message, &["jitter is 1.5", "between 0 and 1"]);
}

#[test]
fn backoff_base_above_max_is_rejected() {
    let (error, message) = reject("backoff_base_above_max.yaml");
    assert!(
        matches!(error, TemplateError::InvalidBackoff { .. }),
        "{message}"
    );
    assert_mentions(
        &message,
        &[
            "base_delay_ms (10000)",
            "max_delay_ms (500)",
            "step `charge`",
        ],
    );
}

#[test]
fn step_name_with_whitespace_is_rejected() {
    let (error, message) = reject("step_name_whitespace.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidName { what, value, .. } if what == "step name" && value == "ship order"),
        "{message}"
    );
    assert_mentions(&message, &["\"ship order\"", "whitespace"]);
}

#[test]
fn empty_template_name_is_rejected() {
    let (error, message) = reject("empty_template_name.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidName { what, value, .. } if what == "template name" && value.is_empty()),
        "{message}"
    );
    assert_mentions(&message, &["template name", "empty"]);
}

#[test]
fn blank_handler_class_is_rejected() {
    let (error, message) = reject("empty_handler_class.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidHandlerClass { step, .. } if step == "charge"),
        "{message}"
    );
    assert_mentions(&message, &["handler_class", "step `charge`", "whitespace"]);
}

#[test]
fn non_semver_version_is_rejected() {
    let (error, message) = reject("invalid_version.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidVersion { version, .. } if version == "1.0"),
        "{message}"
    );
    assert_mentions(&message, &["\"1.0\"", "MAJOR.MINOR.PATCH", "\"1.0.0\""]);
}

#[test]
fn override_of_unknown_step_is_rejected() {
    let (error, message) = reject("unknown_override_step.yaml");
    assert_eq!(
        error,
        TemplateError::UnknownOverrideStep {
            environment: "production".to_owned(),
            step: "shipping".to_owned()
        }
    );
    assert_mentions(&message, &["`production`", "`shipping`"]);
}

#[test]
fn invalid_override_value_names_the_environment() {
    let (error, message) = reject("override_zero_timeout.yaml");
    assert!(
        matches!(&error, TemplateError::InvalidTimeout { value: 0, location, .. }
            if location == "step `ship` in environment `staging`"),
        "{message}"
    );
    assert_mentions(&message, &["step `ship`", "environment `staging`"]);
}

#[test]
fn every_fixture_is_rejected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid_templates");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            TaskTemplate::from_yaml_str(&text).is_err(),
            "{} loaded but should not",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 25, "found only {count} fixtures");
}
