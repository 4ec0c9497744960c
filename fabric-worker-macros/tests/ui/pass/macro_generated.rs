// Handlers produced by `macro_rules!` (types arrive wrapped in invisible
// groups, and the generated identifiers live in the macro's hygiene context).
use fabric_worker::prelude::*;

macro_rules! make_handler {
    ($name:ident, $ty:literal, $payload:ty) => {
        #[handler(message_type = $ty)]
        async fn $name(ctx: Context, payload: $payload) -> Result<(), HandlerError> {
            let _ = (ctx, payload);
            Ok(())
        }
    };
}

make_handler!(strings, "gen.strings", String);
make_handler!(numbers, "gen.numbers", Vec<u64>);

fn main() {
    use fabric_worker::__private::{Registration, inventory};

    assert_eq!(inventory::iter::<Registration>.into_iter().count(), 2);
}
