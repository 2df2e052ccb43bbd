//! The agent as one task: the [`Agent`] lives in it alone, jobs come in
//! over a channel and run one at a time, and every job's changes are
//! published as a [`Snapshot`] before its caller hears back. Readers take
//! the latest snapshot and never wait for a job.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::{Agent, AgentError, Snapshot};

/// A job's future, borrowing the agent while it runs.
pub type Running<'a, R> = Pin<Box<dyn Future<Output = R> + Send + 'a>>;

type Job = Box<dyn for<'a> FnOnce(&'a mut Agent) -> Running<'a, ()> + Send>;

/// How the rest of the program reaches the agent.
#[derive(Clone)]
pub struct AgentHandle {
    jobs: mpsc::UnboundedSender<Job>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl AgentHandle {
    /// The state as of the last change.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Runs `job` on the agent after the jobs sent before it, and returns
    /// its result once what it changed is published.
    pub async fn run<R, F>(&self, job: F) -> Result<R, AgentError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Agent) -> Running<'a, R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |agent| {
            Box::pin(async move {
                let result = job(agent).await;
                agent.publish();
                // The caller may have stopped waiting.
                let _ = reply.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

fn stopped() -> AgentError {
    AgentError::failed("the agent has stopped")
}

/// Starts the task that owns `agent`. It runs until every handle is gone,
/// and then hands the agent back.
pub fn spawn(agent: Agent) -> (AgentHandle, JoinHandle<Agent>) {
    let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
    let handle = AgentHandle {
        jobs,
        snapshot: agent.snapshots(),
    };
    let owner = tokio::spawn(async move {
        let mut agent = agent;
        while let Some(job) = queue.recv().await {
            job(&mut agent).await;
        }
        agent
    });
    (handle, owner)
}
