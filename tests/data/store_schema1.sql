BEGIN TRANSACTION;
CREATE TABLE evaluations (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	step INTEGER NOT NULL, 
	nfe INTEGER NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	value FLOAT NOT NULL, 
	extractor VARCHAR(64) NOT NULL, 
	num_samples INTEGER NOT NULL, 
	sampler VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (run_id, step, nfe, metric, sampler), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
INSERT INTO "evaluations" VALUES(1,'3593913919bd4073',10,1,'fd',3.5,'raw',100,'consistency');
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "meta" VALUES('schema_version','1');
CREATE TABLE metrics (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	step INTEGER NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (run_id, step, name), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
INSERT INTO "metrics" VALUES(1,'3593913919bd4073',5,'loss',0.5);
INSERT INTO "metrics" VALUES(2,'3593913919bd4073',10,'loss',0.25);
CREATE TABLE run_params (
	run_id VARCHAR(32) NOT NULL, 
	"key" VARCHAR(128) NOT NULL, 
	value TEXT NOT NULL, 
	value_num FLOAT, 
	PRIMARY KEY (run_id, "key"), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
INSERT INTO "run_params" VALUES('3593913919bd4073','data.name','"swissroll"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','data.num_samples','500',500.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','data.noise','0.3',0.3);
INSERT INTO "run_params" VALUES('3593913919bd4073','data.seed','0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','network.arch','"mlp"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','network.hidden','16',16.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','network.depth','1',1.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','network.emb_dim','32',32.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','network.dropout','0.0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','network.conditional','false',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','precond.sigma_data','0.5',0.5);
INSERT INTO "run_params" VALUES('3593913919bd4073','precond.sigma_min','0.003',0.003);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.mode','"tuning"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.P_mean','-1.1',-1.1);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.P_std','2.0',2.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.q','2.0',2.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.stages','8',8.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.k','8.0',8.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.b','1.0',1.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.weighting','"inv_delta_t"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.p','0.5',0.5);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.c','0.0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ect.adaptive_norm','"l2"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','optim.name','"radam"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','optim.lr','0.0001',0.0001);
INSERT INTO "run_params" VALUES('3593913919bd4073','optim.betas','[0.9, 0.999]',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','optim.eps','1e-08',1.0e-08);
INSERT INTO "run_params" VALUES('3593913919bd4073','optim.decay','"constant"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','optim.t_ref','2000',2000.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','ema.kind','"classic"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','ema.beta','0.9999',0.9999);
INSERT INTO "run_params" VALUES('3593913919bd4073','ema.warmup','false',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','schedule.batch_size','32',32.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','schedule.batch_per_device','null',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','schedule.iterations','10',10.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','schedule.log_interval','100',100.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','schedule.eval_interval','0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','schedule.checkpoint_interval','0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','gpu.channels_last','false',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','gpu.tf32','true',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','gpu.compile','false',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','sampling.sigma_max','80.0',80.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','sampling.mid_times','[0.821]',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','sampling.heun_steps','18',18.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','sampling.heun_sigma_min','0.002',0.002);
INSERT INTO "run_params" VALUES('3593913919bd4073','sampling.rho','7.0',7.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.metric','null',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.nfe','[1, 2]',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.heun','false',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.num_samples','2000',2000.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.batch_size','500',500.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.seed','0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.weights','null',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','eval.cache_dir','null',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','init','null',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','seed','0',0.0);
INSERT INTO "run_params" VALUES('3593913919bd4073','device','"auto"',NULL);
INSERT INTO "run_params" VALUES('3593913919bd4073','precision','"fp32"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','data.name','"swissroll"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','data.num_samples','500',500.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','data.noise','0.3',0.3);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','data.seed','0',0.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','network.arch','"mlp"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','network.hidden','16',16.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','network.depth','1',1.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','network.emb_dim','32',32.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','network.dropout','0.2',0.2);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','network.conditional','false',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','precond.sigma_data','0.5',0.5);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','precond.sigma_min','0.003',0.003);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.mode','"tuning"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.P_mean','-1.1',-1.1);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.P_std','2.0',2.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.q','2.0',2.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.stages','8',8.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.k','8.0',8.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.b','1.0',1.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.weighting','"inv_delta_t"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.p','0.5',0.5);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.c','0.0',0.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ect.adaptive_norm','"l2"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','optim.name','"radam"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','optim.lr','0.0001',0.0001);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','optim.betas','[0.9, 0.999]',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','optim.eps','1e-08',1.0e-08);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','optim.decay','"constant"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','optim.t_ref','2000',2000.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ema.kind','"classic"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ema.beta','0.9999',0.9999);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','ema.warmup','false',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','schedule.batch_size','32',32.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','schedule.batch_per_device','null',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','schedule.iterations','10',10.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','schedule.log_interval','100',100.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','schedule.eval_interval','0',0.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','schedule.checkpoint_interval','0',0.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','gpu.channels_last','false',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','gpu.tf32','true',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','gpu.compile','false',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','sampling.sigma_max','80.0',80.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','sampling.mid_times','[0.821]',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','sampling.heun_steps','18',18.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','sampling.heun_sigma_min','0.002',0.002);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','sampling.rho','7.0',7.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.metric','null',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.nfe','[1, 2]',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.heun','false',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.num_samples','2000',2000.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.batch_size','500',500.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.seed','0',0.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.weights','null',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','eval.cache_dir','null',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','init','null',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','seed','0',0.0);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','device','"auto"',NULL);
INSERT INTO "run_params" VALUES('623338a132fa9d2e','precision','"fp32"',NULL);
CREATE TABLE runs (
	run_id VARCHAR(32) NOT NULL, 
	label VARCHAR(128) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	node VARCHAR(128), 
	config_json TEXT NOT NULL, 
	depends_on VARCHAR(32), 
	created_at VARCHAR(32) NOT NULL, 
	started_at VARCHAR(32), 
	finished_at VARCHAR(32), 
	wall_seconds FLOAT, 
	step INTEGER NOT NULL, 
	total_steps INTEGER NOT NULL, 
	num_params INTEGER, 
	flops_per_sample FLOAT, 
	images_seen INTEGER, 
	train_flops FLOAT, 
	normalized_compute FLOAT, 
	checkpoint TEXT, 
	error TEXT, 
	PRIMARY KEY (run_id)
);
INSERT INTO "runs" VALUES('3593913919bd4073','dropout=0.0','run','completed',1,NULL,'{"data": {"name": "swissroll", "num_samples": 500, "noise": 0.3, "seed": 0}, "network": {"arch": "mlp", "hidden": 16, "depth": 1, "emb_dim": 32, "dropout": 0.0, "conditional": false}, "precond": {"sigma_data": 0.5, "sigma_min": 0.003}, "ect": {"mode": "tuning", "P_mean": -1.1, "P_std": 2.0, "q": 2.0, "stages": 8, "k": 8.0, "b": 1.0, "weighting": "inv_delta_t", "p": 0.5, "c": 0.0, "adaptive_norm": "l2"}, "optim": {"name": "radam", "lr": 0.0001, "betas": [0.9, 0.999], "eps": 1e-08, "decay": "constant", "t_ref": 2000}, "ema": {"kind": "classic", "beta": 0.9999, "warmup": false}, "schedule": {"batch_size": 32, "batch_per_device": null, "iterations": 10, "log_interval": 100, "eval_interval": 0, "checkpoint_interval": 0}, "gpu": {"channels_last": false, "tf32": true, "compile": false}, "sampling": {"sigma_max": 80.0, "mid_times": [0.821], "heun_steps": 18, "heun_sigma_min": 0.002, "rho": 7.0}, "eval": {"metric": null, "nfe": [1, 2], "heun": false, "num_samples": 2000, "batch_size": 500, "seed": 0, "weights": null, "cache_dir": null}, "init": null, "seed": 0, "device": "auto", "precision": "fp32"}',NULL,'2026-12-02T03:14:03+00:00','2026-11-30T10:00:00+00:00','2026-11-30T10:05:30+00:00',330.0,10,10,1234,NULL,320,1500000000.0,NULL,'/x/ckpt.pt',NULL);
INSERT INTO "runs" VALUES('623338a132fa9d2e','dropout=0.2','run','pending',0,NULL,'{"data": {"name": "swissroll", "num_samples": 500, "noise": 0.3, "seed": 0}, "network": {"arch": "mlp", "hidden": 16, "depth": 1, "emb_dim": 32, "dropout": 0.2, "conditional": false}, "precond": {"sigma_data": 0.5, "sigma_min": 0.003}, "ect": {"mode": "tuning", "P_mean": -1.1, "P_std": 2.0, "q": 2.0, "stages": 8, "k": 8.0, "b": 1.0, "weighting": "inv_delta_t", "p": 0.5, "c": 0.0, "adaptive_norm": "l2"}, "optim": {"name": "radam", "lr": 0.0001, "betas": [0.9, 0.999], "eps": 1e-08, "decay": "constant", "t_ref": 2000}, "ema": {"kind": "classic", "beta": 0.9999, "warmup": false}, "schedule": {"batch_size": 32, "batch_per_device": null, "iterations": 10, "log_interval": 100, "eval_interval": 0, "checkpoint_interval": 0}, "gpu": {"channels_last": false, "tf32": true, "compile": false}, "sampling": {"sigma_max": 80.0, "mid_times": [0.821], "heun_steps": 18, "heun_sigma_min": 0.002, "rho": 7.0}, "eval": {"metric": null, "nfe": [1, 2], "heun": false, "num_samples": 2000, "batch_size": 500, "seed": 0, "weights": null, "cache_dir": null}, "init": null, "seed": 0, "device": "auto", "precision": "fp32"}',NULL,'2026-12-02T03:14:03+00:00',NULL,NULL,NULL,0,10,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE studies (
	name VARCHAR(64) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	description TEXT NOT NULL, 
	spec_yaml TEXT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "studies" VALUES('legacy','custom','','name: legacy
description: ''''
kind: custom
base:
  data:
    name: swissroll
    num_samples: 500
    noise: 0.3
    seed: 0
  network:
    arch: mlp
    hidden: 16
    depth: 1
    emb_dim: 32
    dropout: 0.0
    conditional: false
  precond:
    sigma_data: 0.5
    sigma_min: 0.003
  ect:
    mode: tuning
    P_mean: -1.1
    P_std: 2.0
    q: 2.0
    stages: 8
    k: 8.0
    b: 1.0
    weighting: inv_delta_t
    p: 0.5
    c: 0.0
    adaptive_norm: l2
  optim:
    name: radam
    lr: 0.0001
    betas:
    - 0.9
    - 0.999
    eps: 1.0e-08
    decay: constant
    t_ref: 2000
  ema:
    kind: classic
    beta: 0.9999
    warmup: false
  schedule:
    batch_size: 32
    batch_per_device: null
    iterations: 10
    log_interval: 100
    eval_interval: 0
    checkpoint_interval: 0
  gpu:
    channels_last: false
    tf32: true
    compile: false
  sampling:
    sigma_max: 80.0
    mid_times:
    - 0.821
    heun_steps: 18
    heun_sigma_min: 0.002
    rho: 7.0
  eval:
    metric: null
    nfe:
    - 1
    - 2
    heun: false
    num_samples: 2000
    batch_size: 500
    seed: 0
    weights: null
    cache_dir: null
  init: null
  seed: 0
  device: auto
  precision: fp32
variants: []
grid:
  network.dropout:
  - 0.0
  - 0.2
pretrain: null
seeds:
- 0
resources:
  cpus: 1.0
  gpus: 0.0
max_failures: 2
','pending','2026-12-02T03:14:03+00:00');
CREATE TABLE study_runs (
	study VARCHAR(64) NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	label VARCHAR(128) NOT NULL, 
	PRIMARY KEY (study, run_id), 
	FOREIGN KEY(study) REFERENCES studies (name), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
INSERT INTO "study_runs" VALUES('legacy','3593913919bd4073','dropout=0.0');
INSERT INTO "study_runs" VALUES('legacy','623338a132fa9d2e','dropout=0.2');
CREATE INDEX ix_runs_status ON runs (status);
CREATE INDEX ix_run_params_value_num ON run_params (value_num);
CREATE INDEX ix_metrics_run_id ON metrics (run_id);
CREATE INDEX ix_evaluations_run_id ON evaluations (run_id);
COMMIT;
