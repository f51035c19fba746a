//! SPEC §5: blocking, stored first, then every effect on live state.

use super::{Core, session::Session};
use crate::server::{
    cluster::bus::{BlockChange, Kind},
    error::Result,
    store::WriteOp,
};

impl Core {
    /// `me` blocks `name`: stored, then every effect of SPEC §5 (the block index that presence,
    /// broadcast, messages and `ListOnline` read; grants and pending requests between the two).
    pub async fn block(&self, me: &Session, name: &str) -> Result<()> {
        self.learn(name).await?;
        let target = self.other(me, name, "user", "block")?;
        self.writer
            .write(WriteOp::Block {
                blocker: me.user_id(),
                blocked: target.id,
            })
            .await?;
        self.blocks.add(me.user_id(), target.id);
        self.publish(Kind::Block(BlockChange {
            blocker: me.user_id(),
            blocked: target.id,
            added: true,
        }));
        self.notify(self.consent.blocked(me.user_id(), target.id));
        tracing::info!(user = %me.name(), "blocked a user");
        Ok(())
    }

    /// `me` unblocks `name`.
    pub async fn unblock(&self, me: &Session, name: &str) -> Result<()> {
        self.learn(name).await?;
        let target = self.other(me, name, "user", "unblock")?;
        self.writer
            .write(WriteOp::Unblock {
                blocker: me.user_id(),
                blocked: target.id,
            })
            .await?;
        self.blocks.remove(me.user_id(), target.id);
        self.publish(Kind::Block(BlockChange {
            blocker: me.user_id(),
            blocked: target.id,
            added: false,
        }));
        Ok(())
    }

    /// The users `me` blocks, sorted by name.
    pub fn blocked(&self, me: &Session) -> Vec<String> {
        let mut names: Vec<String> = self
            .blocks
            .blocked_by_user(me.user_id())
            .into_iter()
            .filter_map(|id| self.accounts.by_id(id))
            .map(|a| a.name.to_string())
            .collect();
        names.sort_by_key(|n| n.to_ascii_lowercase());
        names
    }
}
