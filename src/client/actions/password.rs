//! `password`: the user changes their own password (`ChangePassword`). The passwords never go
//! on the command line: at a terminal they are asked for without echo (the new one twice); a
//! script gives them as the two lines after `password`, the REPL collects them. On success the
//! client's copy used for automatic re-logins is replaced too.

use super::{Done, Pending};
use crate::{
    client::{
        api::Authed,
        call::{failed, timed},
        login::{Live, SharedSecret},
        render::Item,
    },
    pb::{self, chat_client::ChatClient},
    types::Secret,
};

/// Changes the password from `old` to `new`.
pub(in crate::client) fn change(
    live: &Live,
    kept: SharedSecret,
    old: Secret,
    new: Secret,
) -> Pending {
    Box::pin(change_with(live.number, live.chat.clone(), kept, old, new))
}

async fn change_with(
    login: u64,
    mut chat: ChatClient<Authed>,
    kept: SharedSecret,
    old: Secret,
    new: Secret,
) -> Done {
    let request = pb::ChangePasswordRequest {
        old_password: old.expose().to_owned(),
        new_password: new.expose().to_owned(),
    };
    let item = match timed(chat.change_password(request)).await {
        Ok(_) => {
            kept.set(new);
            Item::PasswordChanged
        }
        Err(status) => failed("password", &status),
    };
    Done::show(login, item)
}

/// Asks at the terminal (no echo) for the current password and the new one twice, then
/// changes it.
pub(in crate::client) fn ask_and_change(live: &Live, kept: SharedSecret) -> Pending {
    let (login, chat) = (live.number, live.chat.clone());
    Box::pin(async move {
        let asked = tokio::task::spawn_blocking(|| -> std::io::Result<_> {
            let old = rpassword::prompt_password("current password: ")?;
            let new = rpassword::prompt_password("new password: ")?;
            let again = rpassword::prompt_password("new password again: ")?;
            Ok((old, new, again))
        })
        .await;
        let (old, new, again) = match asked {
            Ok(Ok(three)) => three,
            Ok(Err(e)) => {
                return Done::show(login, refused(format!("cannot read a password: {e}")));
            }
            Err(e) => return Done::show(login, refused(format!("cannot ask: {e}"))),
        };
        if new != again {
            return Done::show(
                login,
                refused("the two new passwords differ; nothing changed".into()),
            );
        }
        change_with(login, chat, kept, Secret::new(old), Secret::new(new)).await
    })
}

fn refused(why: String) -> Item {
    Item::refused("password", why)
}
