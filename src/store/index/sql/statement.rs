//! SQL text with its bound parameters, and the dialect differences in writing them.

/// The SQL differences between the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// SQL text with its parameters, built in one pass so placeholders and binds stay in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sql {
    dialect: Dialect,
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            text: String::with_capacity(256),
            binds: Vec::new(),
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    fn placeholder(&mut self) {
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.binds.len().to_string());
            }
        }
    }

    /// Append a placeholder for a text value. NUL characters are dropped: they are never
    /// meaningful in DICOM text and PostgreSQL refuses them.
    pub fn bind(&mut self, value: &str) -> &mut Self {
        let value = if value.contains('\0') {
            value.replace('\0', "")
        } else {
            value.to_string()
        };
        self.binds.push(Bind::Text(value));
        self.placeholder();
        self
    }

    pub fn bind_int(&mut self, value: i64) -> &mut Self {
        self.binds.push(Bind::Int(value));
        self.placeholder();
        self
    }

    /// `(?, ?, ...)` for a non-empty list.
    pub(super) fn bind_list(&mut self, values: &[String]) -> &mut Self {
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self.push(")")
    }

    /// `LIMIT x OFFSET y`, as each backend accepts it.
    pub(super) fn limit_offset(&mut self, limit: Option<u32>, offset: u32) -> &mut Self {
        match (limit, offset, self.dialect) {
            (Some(l), 0, _) => self.push(&format!(" LIMIT {l}")),
            (Some(l), o, _) => self.push(&format!(" LIMIT {l} OFFSET {o}")),
            (None, 0, _) => self,
            (None, o, Dialect::Sqlite) => self.push(&format!(" LIMIT -1 OFFSET {o}")),
            (None, o, Dialect::Postgres) => self.push(&format!(" OFFSET {o}")),
        }
    }
}
