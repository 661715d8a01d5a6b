//! Bad input never panics the decoders: arbitrary bytes, and valid frames cut short or with a
//! byte changed, are either decoded or rejected with an error.

mod common;

use common::load_vectors;
use proptest::prelude::*;
use tasker_protocol::{Limits, decode_orchestrator_message, decode_worker_message, encode};

fn valid_frames() -> Vec<Vec<u8>> {
    load_vectors("valid")
        .iter()
        .map(|vector| serde_json::to_vec(&vector.body["message"]).expect("serializes"))
        .collect()
}

fn decode_both_ways(frame: &[u8]) {
    let limits = Limits::default();
    if let Ok(message) = decode_worker_message(frame, &limits) {
        // Whatever decodes re-encodes to something that decodes to the same message.
        let again = decode_worker_message(&encode(&message), &limits);
        assert_eq!(again.as_ref(), Ok(&message));
    }
    if let Ok(message) = decode_orchestrator_message(frame, &limits) {
        let again = decode_orchestrator_message(&encode(&message), &limits);
        assert_eq!(again.as_ref(), Ok(&message));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_both_ways(&frame);
    }

    #[test]
    fn truncated_valid_frames_never_panic(index in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let frames = valid_frames();
        let frame = &frames[index.index(frames.len())];
        decode_both_ways(&frame[..cut.index(frame.len() + 1)]);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        index in any::<prop::sample::Index>(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let frames = valid_frames();
        let mut frame = frames[index.index(frames.len())].clone();
        let at = position.index(frame.len());
        frame[at] = byte;
        decode_both_ways(&frame);
    }
}
