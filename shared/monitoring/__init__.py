"""Monitoring of a champion in production: is live traffic still the population it was trained on?

Module map (imports go to the modules; this package re-exports nothing, so importing one part never
pulls in the others):
- stats: pure drift statistics (normalised Wasserstein, PSI, Jensen-Shannon, unseen share).
- window: streams a time window of the prediction log as bounded column chunks (LogChunk).
- drift: DriftAccumulator folds chunks into per-feature, prediction and dataset drift (DriftResult);
  holdout_output_profile is what validation stores as the prediction-drift reference.
- report: builds and stores the monitoring report of one window.
- policy: decides whether a window retrains the model, with the guards against retraining storms.
"""
