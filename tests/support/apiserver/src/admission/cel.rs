//! A documented subset of CEL, enough for webhook `matchConditions`.
//!
//! kube-apiserver compiles matchConditions with cel-go and type-checks them when the
//! configuration is created. This server parses and evaluates at call time instead, over the
//! same JSON values kube binds (`request`, `object`, `oldObject`).
//!
//! Supported:
//! - literals: `'single'` and `"double"` quoted strings (escapes `\\ \' \" \n \t \r`), integers
//!   (a `u` suffix is accepted and read as an int), doubles, `true`, `false`, `null`, list
//!   literals `[a, b]`;
//! - variables `request`, `object`, `oldObject` (null when absent, as in kube) and the
//!   comprehension variable of a macro;
//! - field selection `a.b`, indexing `a['key']` / `list[0]`;
//! - operators `!`, unary `-`, `* / %`, `+ -` (numbers, string and list concatenation),
//!   `== != < <= > >=`, `in` (list membership, map key), `&&`, `||` (with CEL's error
//!   absorption: `false && error` is false, `true || error` is true), `? :`, parentheses;
//! - macros `has(a.b)`, `list.exists(x, p)`, `list.all(x, p)`, `list.exists_one(x, p)` (over a
//!   map they range over its keys);
//! - functions `size(x)` / `x.size()`, `x.startsWith(s)`, `x.endsWith(s)`, `x.contains(s)`,
//!   `x.lowerAscii()`, `x.upperAscii()`.
//!
//! Not supported (an evaluation error, which the matcher treats like kube treats a
//! matchCondition error: the webhook's failurePolicy decides): `authorizer`, `params`,
//! `namespaceObject`, `variables`, regular expressions (`matches`), map literals, raw and
//! triple-quoted strings, bytes, timestamps/durations, type conversions, optional syntax.
//!
//! Equality is heterogeneous as in cel-go: values of different types are unequal, numbers
//! compare by value. A missing map key is the error `no such key: <key>`, as in cel-go.
use std::fmt;

use serde_json::{Number, Value};

/// Why an expression could not be evaluated (parse errors included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CelError(pub String);

impl fmt::Display for CelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, CelError> {
    Err(CelError(message.into()))
}

/// The top-level variables of a webhook matchCondition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bindings<'a> {
    /// The AdmissionRequest as kube binds it (no uid, object or oldObject; empty fields omitted).
    pub request: &'a Value,
    /// The new object, or null.
    pub object: &'a Value,
    /// The old object, or null.
    pub old_object: &'a Value,
}

/// Parse and evaluate `expression`.
pub(crate) fn evaluate(expression: &str, bindings: Bindings<'_>) -> Result<Value, CelError> {
    let tokens = lex(expression)?;
    if tokens.len() > MAX_TOKENS {
        return err(format!(
            "expression of {} tokens is too long for the test API server's CEL subset (at most {MAX_TOKENS})",
            tokens.len()
        ));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let ast = parser.expression()?;
    if let Some(token) = parser.peek() {
        return err(format!("Syntax error: unexpected {token}"));
    }
    let scope = Scope {
        bindings,
        locals: Vec::new(),
    };
    eval(&ast, &scope)
}

/// Bounds that keep the recursive parser and evaluator far from the stack's end (kube bounds
/// expressions by length and cost instead).
const MAX_TOKENS: usize = 1000;
const MAX_NESTING: usize = 50;

// ---------------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Double(f64),
    Str(String),
    Punct(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(name) => write!(f, "'{name}'"),
            Token::Int(n) => write!(f, "'{n}'"),
            Token::Double(n) => write!(f, "'{n}'"),
            Token::Str(s) => write!(f, "'{s:?}'"),
            Token::Punct(p) => write!(f, "'{p}'"),
        }
    }
}

/// Longest first, so `==` wins over `=`-less prefixes and `&&` over nothing.
const PUNCTUATION: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", "{", "}", ".", ",", "?", ":", "!", "-", "+", "*", "/", "%",
    "<", ">",
];

fn lex(text: &str) -> Result<Vec<Token>, CelError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let (s, next) = lex_string(&chars, i)?;
            tokens.push(Token::Str(s));
            i = next;
        } else if c.is_ascii_digit() {
            let start = i;
            while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            let is_double = chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
            if is_double {
                i += 1;
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            let literal: String = chars.get(start..i).unwrap_or_default().iter().collect();
            if is_double {
                let n = literal
                    .parse::<f64>()
                    .map_err(|_| CelError(format!("Syntax error: bad number {literal}")))?;
                tokens.push(Token::Double(n));
            } else {
                let n = literal
                    .parse::<i64>()
                    .map_err(|_| CelError(format!("Syntax error: integer out of range {literal}")))?;
                if matches!(chars.get(i), Some('u' | 'U')) {
                    i += 1;
                }
                tokens.push(Token::Int(n));
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars.get(start..i).unwrap_or_default().iter().collect()));
        } else {
            let rest: String = chars
                .get(i..(i + 2).min(chars.len()))
                .unwrap_or_default()
                .iter()
                .collect();
            let Some(punct) = PUNCTUATION.iter().find(|p| rest.starts_with(**p)) else {
                return err(format!("Syntax error: token recognition error at: '{c}'"));
            };
            tokens.push(Token::Punct(punct));
            i += punct.chars().count();
        }
    }
    Ok(tokens)
}

fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), CelError> {
    let quote = chars.get(start).copied().unwrap_or('\'');
    if chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote) {
        return err("Syntax error: triple-quoted strings are not supported by the test API server's CEL subset");
    }
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return err("Syntax error: unterminated string literal"),
            Some(&c) if c == quote => return Ok((out, i + 1)),
            Some('\\') => {
                let escaped = match chars.get(i + 1) {
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some(other) => return err(format!("Syntax error: unsupported escape sequence \\{other}")),
                    None => return err("Syntax error: unterminated string literal"),
                };
                out.push(escaped);
                i += 2;
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    Ident(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Has(Box<Expr>, String),
    Call {
        target: Option<Box<Expr>>,
        function: String,
        args: Vec<Expr>,
    },
    Comprehension {
        kind: Quantifier,
        range: Box<Expr>,
        var: String,
        predicate: Box<Expr>,
    },
    List(Vec<Expr>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Conditional(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantifier {
    Exists,
    All,
    ExistsOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Relations and arithmetic by precedence level (lowest first), as CEL's grammar orders them.
const RELATIONS: &[(&str, BinaryOp)] = &[
    ("==", BinaryOp::Eq),
    ("!=", BinaryOp::Ne),
    ("<", BinaryOp::Lt),
    ("<=", BinaryOp::Le),
    (">", BinaryOp::Gt),
    (">=", BinaryOp::Ge),
];
const ADDITIVE: &[(&str, BinaryOp)] = &[("+", BinaryOp::Add), ("-", BinaryOp::Sub)];
const MULTIPLICATIVE: &[(&str, BinaryOp)] = &[("*", BinaryOp::Mul), ("/", BinaryOp::Div), ("%", BinaryOp::Rem)];

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Current nesting of `expression` (parentheses, arguments, indexes, lists).
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat(&mut self, punct: &str) -> bool {
        if matches!(self.peek(), Some(Token::Punct(p)) if *p == punct) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn require(&mut self, punct: &str) -> Result<(), CelError> {
        if self.eat(punct) {
            return Ok(());
        }
        match self.peek() {
            Some(token) => err(format!("Syntax error: expected '{punct}', found {token}")),
            None => err(format!("Syntax error: expected '{punct}' at end of input")),
        }
    }

    fn expression(&mut self) -> Result<Expr, CelError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return err(format!("Syntax error: expression nested deeper than {MAX_NESTING}"));
        }
        let result = self.conditional();
        self.depth -= 1;
        result
    }

    fn conditional(&mut self) -> Result<Expr, CelError> {
        let condition = self.or()?;
        if !self.eat("?") {
            return Ok(condition);
        }
        let then = self.or()?;
        self.require(":")?;
        let otherwise = self.expression()?;
        Ok(Expr::Conditional(
            Box::new(condition),
            Box::new(then),
            Box::new(otherwise),
        ))
    }

    fn or(&mut self) -> Result<Expr, CelError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, CelError> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, CelError> {
        let mut left = self.binary_level(ADDITIVE, Self::multiplicative)?;
        loop {
            let op = if matches!(self.peek(), Some(Token::Ident(name)) if name == "in") {
                self.at += 1;
                BinaryOp::In
            } else if let Some(op) = self.binary_op(RELATIONS) {
                op
            } else {
                return Ok(left);
            };
            let right = self.binary_level(ADDITIVE, Self::multiplicative)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, CelError> {
        self.binary_level(MULTIPLICATIVE, Self::unary)
    }

    fn binary_op(&mut self, table: &[(&str, BinaryOp)]) -> Option<BinaryOp> {
        let Some(Token::Punct(p)) = self.peek() else {
            return None;
        };
        let op = table.iter().find(|(text, _)| text == p).map(|(_, op)| *op)?;
        self.at += 1;
        Some(op)
    }

    fn binary_level(
        &mut self,
        table: &[(&str, BinaryOp)],
        operand: fn(&mut Self) -> Result<Expr, CelError>,
    ) -> Result<Expr, CelError> {
        let mut left = operand(self)?;
        while let Some(op) = self.binary_op(table) {
            left = Expr::Binary(op, Box::new(left), Box::new(operand(self)?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, CelError> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.member()
    }

    fn member(&mut self) -> Result<Expr, CelError> {
        let mut expr = self.primary()?;
        loop {
            if self.eat(".") {
                let Some(Token::Ident(name)) = self.next() else {
                    return err("Syntax error: expected a field or method name after '.'");
                };
                if self.eat("(") {
                    let args = self.arguments(")")?;
                    expr = method(expr, name, args)?;
                } else {
                    expr = Expr::Select(Box::new(expr), name);
                }
            } else if self.eat("[") {
                let index = self.expression()?;
                self.require("]")?;
                expr = Expr::Index(Box::new(expr), Box::new(index));
            } else {
                return Ok(expr);
            }
        }
    }

    fn arguments(&mut self, close: &str) -> Result<Vec<Expr>, CelError> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expression()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.require(",")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, CelError> {
        match self.next() {
            Some(Token::Int(n)) => Ok(Expr::Literal(Value::from(n))),
            Some(Token::Double(n)) => Ok(Expr::Literal(
                Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null),
            )),
            Some(Token::Str(s)) => Ok(Expr::Literal(Value::String(s))),
            Some(Token::Punct("(")) => {
                let inner = self.expression()?;
                self.require(")")?;
                Ok(inner)
            }
            Some(Token::Punct("[")) => Ok(Expr::List(self.arguments("]")?)),
            Some(Token::Punct("{")) => {
                err("Syntax error: map literals are not supported by the test API server's CEL subset")
            }
            Some(Token::Ident(name)) => match name.as_str() {
                "true" => Ok(Expr::Literal(Value::Bool(true))),
                "false" => Ok(Expr::Literal(Value::Bool(false))),
                "null" => Ok(Expr::Literal(Value::Null)),
                _ if self.eat("(") => {
                    let args = self.arguments(")")?;
                    global_call(name, args)
                }
                _ => Ok(Expr::Ident(name)),
            },
            Some(token) => err(format!("Syntax error: unexpected {token}")),
            None => err("Syntax error: unexpected end of input"),
        }
    }
}

/// `has(a.b)` is a macro on a field selection; other global functions are plain calls.
fn global_call(function: String, mut args: Vec<Expr>) -> Result<Expr, CelError> {
    if function != "has" {
        return Ok(Expr::Call {
            target: None,
            function,
            args,
        });
    }
    match (args.pop(), args.is_empty()) {
        (Some(Expr::Select(operand, field)), true) => Ok(Expr::Has(operand, field)),
        _ => err("invalid argument to has() macro"),
    }
}

/// `r.exists(x, p)` and friends are macros binding `x`; other methods are plain calls.
fn method(target: Expr, function: String, mut args: Vec<Expr>) -> Result<Expr, CelError> {
    let kind = match function.as_str() {
        "exists" => Some(Quantifier::Exists),
        "all" => Some(Quantifier::All),
        "exists_one" => Some(Quantifier::ExistsOne),
        _ => None,
    };
    let Some(kind) = kind else {
        return Ok(Expr::Call {
            target: Some(Box::new(target)),
            function,
            args,
        });
    };
    let predicate = args.pop();
    match (args.pop(), predicate, args.is_empty()) {
        (Some(Expr::Ident(var)), Some(predicate), true) => Ok(Expr::Comprehension {
            kind,
            range: Box::new(target),
            var,
            predicate: Box::new(predicate),
        }),
        _ => err(format!("{function}() takes a variable name and a predicate")),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

struct Scope<'a> {
    bindings: Bindings<'a>,
    locals: Vec<(String, Value)>,
}

impl Scope<'_> {
    fn lookup(&self, name: &str) -> Result<Value, CelError> {
        if let Some((_, value)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return Ok(value.clone());
        }
        match name {
            "request" => Ok(self.bindings.request.clone()),
            "object" => Ok(self.bindings.object.clone()),
            "oldObject" => Ok(self.bindings.old_object.clone()),
            "authorizer" | "params" | "namespaceObject" | "variables" => {
                err(format!("'{name}' is not supported by the test API server's CEL subset"))
            }
            _ => err(format!("undeclared reference to '{name}'")),
        }
    }

    fn with(&self, name: &str, value: Value) -> Scope<'_> {
        let mut locals = self.locals.clone();
        locals.push((name.to_owned(), value));
        Scope {
            bindings: self.bindings,
            locals,
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn no_overload<T>(function: &str, values: &[&Value]) -> Result<T, CelError> {
    let types: Vec<&str> = values.iter().map(|v| type_name(v)).collect();
    err(format!("no such overload: {function}({})", types.join(", ")))
}

fn as_bool(value: &Value, function: &str) -> Result<bool, CelError> {
    value.as_bool().map_or_else(|| no_overload(function, &[value]), Ok)
}

fn eval(expr: &Expr, scope: &Scope<'_>) -> Result<Value, CelError> {
    match expr {
        Expr::Literal(value) => Ok(value.clone()),
        Expr::Ident(name) => scope.lookup(name),
        Expr::List(items) => items
            .iter()
            .map(|item| eval(item, scope))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Expr::Select(operand, field) => select(&eval(operand, scope)?, field),
        Expr::Index(operand, index) => index_value(&eval(operand, scope)?, &eval(index, scope)?),
        Expr::Has(operand, field) => match eval(operand, scope)? {
            Value::Object(map) => Ok(Value::Bool(map.contains_key(field))),
            other => err(format!("invalid type for field selection: {}", type_name(&other))),
        },
        Expr::Not(operand) => Ok(Value::Bool(!as_bool(&eval(operand, scope)?, "!_")?)),
        Expr::Negate(operand) => negate(&eval(operand, scope)?),
        Expr::And(left, right) => logical(left, right, scope, false),
        Expr::Or(left, right) => logical(left, right, scope, true),
        Expr::Conditional(condition, then, otherwise) => {
            if as_bool(&eval(condition, scope)?, "_?_:_")? {
                eval(then, scope)
            } else {
                eval(otherwise, scope)
            }
        }
        Expr::Binary(op, left, right) => binary(*op, &eval(left, scope)?, &eval(right, scope)?),
        Expr::Call { target, function, args } => {
            let target = target.as_ref().map(|t| eval(t, scope)).transpose()?;
            let args = args.iter().map(|a| eval(a, scope)).collect::<Result<Vec<_>, _>>()?;
            call(target.as_ref(), function, &args)
        }
        Expr::Comprehension {
            kind,
            range,
            var,
            predicate,
        } => comprehension(*kind, &eval(range, scope)?, var, predicate, scope),
    }
}

/// `&&` / `||` with CEL's commutative error handling: a decisive operand wins over an error.
fn logical(left: &Expr, right: &Expr, scope: &Scope<'_>, decisive: bool) -> Result<Value, CelError> {
    let function = if decisive { "_||_" } else { "_&&_" };
    let left = eval(left, scope).and_then(|v| as_bool(&v, function));
    if left == Ok(decisive) {
        return Ok(Value::Bool(decisive));
    }
    let right = eval(right, scope).and_then(|v| as_bool(&v, function));
    match (left, right) {
        (_, Ok(r)) if r == decisive => Ok(Value::Bool(decisive)),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(_), Ok(r)) => Ok(Value::Bool(r)),
    }
}

fn select(value: &Value, field: &str) -> Result<Value, CelError> {
    match value {
        Value::Object(map) => map
            .get(field)
            .cloned()
            .map_or_else(|| err(format!("no such key: {field}")), Ok),
        other => err(format!(
            "type '{}' does not support field selection (selecting '{field}')",
            type_name(other)
        )),
    }
}

fn index_value(value: &Value, index: &Value) -> Result<Value, CelError> {
    match (value, index) {
        (Value::Object(map), Value::String(key)) => map
            .get(key)
            .cloned()
            .map_or_else(|| err(format!("no such key: {key}")), Ok),
        (Value::Array(items), Value::Number(n)) => {
            let item = n
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.get(i));
            item.cloned()
                .map_or_else(|| err(format!("index out of range: {n}")), Ok)
        }
        _ => no_overload("_[_]", &[value, index]),
    }
}

/// A number as CEL sees it.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Double(f64),
}

fn num(value: &Value) -> Option<Num> {
    let Value::Number(n) = value else { return None };
    n.as_i64().map(Num::Int).or_else(|| n.as_f64().map(Num::Double))
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Double(d) => d,
    }
}

fn number(n: Num) -> Result<Value, CelError> {
    match n {
        Num::Int(i) => Ok(Value::from(i)),
        Num::Double(d) => Number::from_f64(d)
            .map(Value::Number)
            .map_or_else(|| err("double result is not a finite number"), Ok),
    }
}

fn negate(value: &Value) -> Result<Value, CelError> {
    match num(value) {
        Some(Num::Int(i)) => i
            .checked_neg()
            .map_or_else(|| err("integer overflow"), |n| Ok(Value::from(n))),
        Some(Num::Double(d)) => number(Num::Double(-d)),
        None => no_overload("-_", &[value]),
    }
}

/// Heterogeneous equality: different types are unequal, numbers compare by value.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => match (num(a), num(b)) {
            (Some(Num::Int(x)), Some(Num::Int(y))) => x == y,
            (Some(x), Some(y)) => as_f64(x) == as_f64(y),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn binary(op: BinaryOp, a: &Value, b: &Value) -> Result<Value, CelError> {
    match op {
        BinaryOp::Eq => Ok(Value::Bool(equal(a, b))),
        BinaryOp::Ne => Ok(Value::Bool(!equal(a, b))),
        BinaryOp::In => match b {
            Value::Array(items) => Ok(Value::Bool(items.iter().any(|item| equal(a, item)))),
            Value::Object(map) => match a {
                Value::String(key) => Ok(Value::Bool(map.contains_key(key))),
                _ => Ok(Value::Bool(false)),
            },
            _ => no_overload("@in", &[a, b]),
        },
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => compare(op, a, b),
        BinaryOp::Add => match (a, b) {
            (Value::String(x), Value::String(y)) => Ok(Value::String(format!("{x}{y}"))),
            (Value::Array(x), Value::Array(y)) => Ok(Value::Array(x.iter().chain(y).cloned().collect())),
            _ => arithmetic(op, a, b),
        },
        BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => arithmetic(op, a, b),
    }
}

fn compare(op: BinaryOp, a: &Value, b: &Value) -> Result<Value, CelError> {
    let ordering = match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => match (num(a), num(b)) {
            (Some(Num::Int(x)), Some(Num::Int(y))) => x.cmp(&y),
            (Some(x), Some(y)) => match as_f64(x).partial_cmp(&as_f64(y)) {
                Some(ordering) => ordering,
                None => return Ok(Value::Bool(false)),
            },
            _ => return no_overload("_<_", &[a, b]),
        },
    };
    let result = match op {
        BinaryOp::Lt => ordering.is_lt(),
        BinaryOp::Le => ordering.is_le(),
        BinaryOp::Gt => ordering.is_gt(),
        _ => ordering.is_ge(),
    };
    Ok(Value::Bool(result))
}

fn arithmetic(op: BinaryOp, a: &Value, b: &Value) -> Result<Value, CelError> {
    let (Some(x), Some(y)) = (num(a), num(b)) else {
        return no_overload("arithmetic", &[a, b]);
    };
    if let (Num::Int(x), Num::Int(y)) = (x, y) {
        let result = match op {
            BinaryOp::Add => x.checked_add(y),
            BinaryOp::Sub => x.checked_sub(y),
            BinaryOp::Mul => x.checked_mul(y),
            BinaryOp::Div if y == 0 => return err("division by zero"),
            BinaryOp::Div => x.checked_div(y),
            BinaryOp::Rem if y == 0 => return err("modulus by zero"),
            _ => x.checked_rem(y),
        };
        return result.map_or_else(|| err("integer overflow"), |n| Ok(Value::from(n)));
    }
    if matches!((x, y), (Num::Int(_), Num::Double(_)) | (Num::Double(_), Num::Int(_))) {
        // CEL has no implicit int/double arithmetic.
        return no_overload("arithmetic", &[a, b]);
    }
    let (x, y) = (as_f64(x), as_f64(y));
    let result = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        _ => return no_overload("_%_", &[a, b]),
    };
    number(Num::Double(result))
}

fn call(target: Option<&Value>, function: &str, args: &[Value]) -> Result<Value, CelError> {
    let (receiver, rest) = match target {
        Some(target) => (Some(target), args),
        None => match args.split_first() {
            Some((first, rest)) if function == "size" => (Some(first), rest),
            _ => (None, args),
        },
    };
    match (function, receiver, rest) {
        ("size", Some(value), []) => match value {
            Value::String(s) => Ok(Value::from(s.chars().count())),
            Value::Array(items) => Ok(Value::from(items.len())),
            Value::Object(map) => Ok(Value::from(map.len())),
            other => no_overload("size", &[other]),
        },
        ("startsWith" | "endsWith" | "contains", Some(Value::String(s)), [Value::String(arg)]) => {
            let result = match function {
                "startsWith" => s.starts_with(arg.as_str()),
                "endsWith" => s.ends_with(arg.as_str()),
                _ => s.contains(arg.as_str()),
            };
            Ok(Value::Bool(result))
        }
        ("lowerAscii", Some(Value::String(s)), []) => Ok(Value::String(s.to_ascii_lowercase())),
        ("upperAscii", Some(Value::String(s)), []) => Ok(Value::String(s.to_ascii_uppercase())),
        ("matches", _, _) => {
            err("matches() (regular expressions) is not supported by the test API server's CEL subset")
        }
        _ => {
            let values: Vec<&Value> = receiver.into_iter().chain(rest).collect();
            no_overload(function, &values)
        }
    }
}

fn comprehension(
    kind: Quantifier,
    range: &Value,
    var: &str,
    predicate: &Expr,
    scope: &Scope<'_>,
) -> Result<Value, CelError> {
    let items: Vec<Value> = match range {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map.keys().cloned().map(Value::String).collect::<Vec<_>>(),
        other => return no_overload("comprehension range", &[other]),
    };
    let mut first_error = None;
    let mut count = 0usize;
    for item in items {
        let result = eval(predicate, &scope.with(var, item)).and_then(|v| as_bool(&v, "comprehension"));
        match (kind, result) {
            (Quantifier::Exists, Ok(true)) => return Ok(Value::Bool(true)),
            (Quantifier::All, Ok(false)) => return Ok(Value::Bool(false)),
            (Quantifier::ExistsOne, Err(e)) => return Err(e),
            (Quantifier::ExistsOne, Ok(true)) => count += 1,
            (_, Err(e)) => {
                first_error.get_or_insert(e);
            }
            _ => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Value::Bool(match kind {
        Quantifier::Exists => false,
        Quantifier::All => true,
        Quantifier::ExistsOne => count == 1,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(expression: &str) -> Result<Value, CelError> {
        let request = json!({
            "operation": "UPDATE",
            "userInfo": {"username": "system:serviceaccount:driftguard:driftguard", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "shop",
            "name": "web",
            "dryRun": false,
        });
        let object = json!({"metadata": {"name": "web", "labels": {"app": "web", "driftguard.io/managed": "true"}}, "spec": {"replicas": 3}});
        let old = Value::Null;
        evaluate(
            expression,
            Bindings {
                request: &request,
                object: &object,
                old_object: &old,
            },
        )
    }

    fn truth(expression: &str) -> bool {
        match run(expression) {
            Ok(Value::Bool(b)) => b,
            other => panic!("{expression}: {other:?}"),
        }
    }

    #[test]
    fn the_driftguard_condition_and_common_shapes() {
        assert!(!truth(
            "request.userInfo.username != 'system:serviceaccount:driftguard:driftguard'"
        ));
        assert!(truth(
            "request.userInfo.username == \"system:serviceaccount:driftguard:driftguard\""
        ));
        assert!(truth("'system:authenticated' in request.userInfo.groups"));
        assert!(truth("!('system:masters' in request.userInfo.groups)"));
        assert!(truth("request.operation in ['CREATE', 'UPDATE']"));
        assert!(truth(
            "request.kind.kind == 'Deployment' && request.resource.resource == 'deployments'"
        ));
        assert!(truth("!has(request.subResource) || request.subResource != 'scale'"));
        assert!(truth("request.namespace == 'shop' && request.name.startsWith('we')"));
        assert!(truth("object.metadata.labels['driftguard.io/managed'] == 'true'"));
        assert!(truth("has(object.metadata.labels) && 'app' in object.metadata.labels"));
        assert!(truth(
            "object.metadata.labels.exists(k, k.startsWith('driftguard.io/'))"
        ));
        assert!(truth("request.userInfo.groups.all(g, g.startsWith('system:'))"));
        assert!(truth("request.userInfo.groups.exists_one(g, g.endsWith('accounts'))"));
        assert!(truth(
            "size(request.userInfo.groups) == 2 && object.metadata.name.size() == 3"
        ));
        assert!(truth(
            "object.spec.replicas >= 3 && object.spec.replicas + 1 == 4 && object.spec.replicas == 3.0"
        ));
        assert!(truth("(object.spec.replicas > 5 ? 'big' : 'small') == 'small'"));
        assert!(truth("request.operation.lowerAscii() == 'update' && 'a' + 'b' == 'ab'"));
        assert!(truth("oldObject == null && !request.dryRun"));
        assert!(truth("1 != 'a'"), "heterogeneous equality is false, not an error");
    }

    #[test]
    fn missing_keys_are_errors_absorbed_like_cel() {
        assert_eq!(
            run("object.metadata.annotations.x == 'y'"),
            Err(CelError("no such key: annotations".into()))
        );
        assert!(run("oldObject.metadata.name == 'web'").is_err());
        assert!(!truth("false && object.metadata.annotations.x == 'y'"));
        assert!(truth("object.metadata.annotations.x == 'y' || true"));
        assert!(run("object.metadata.annotations.x == 'y' && true").is_err());
        assert!(run("request.userInfo.groups[5] == 'x'").is_err());
    }

    #[test]
    fn outside_the_subset_is_an_error_not_a_guess() {
        for expression in [
            "authorizer.group('apps').resource('deployments').check('get').allowed()",
            "request.name.matches('^w')",
            "{'a': 1}.size() == 1",
            "unknownVariable == 1",
            "request.name ==",
            "request.name == 'x' extra",
            "'''triple'''",
            "has(request)",
            "request.name.bogus()",
            &format!("{}true{}", "(".repeat(60), ")".repeat(60)),
            &vec!["true"; 600].join(" && "),
        ] {
            assert!(run(expression).is_err(), "{expression} should not evaluate");
        }
    }
}
